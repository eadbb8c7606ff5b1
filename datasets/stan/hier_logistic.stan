// Hierarchical logistic regression: hierbench.datasets.hier_logistic (math in its docstring).
//   theta ~ N(0, I_d),  z_i | theta ~ N(theta, I_d),  y_ij | z_i ~ Bernoulli(inv_logit(x_ij' z_i)).
// Same long-format data as hier_linear.stan; y is 0/1 stored as reals (hierbench keeps float64),
// and the likelihood is the stable y * eta - log(1 + exp(eta)) that the Python log_local uses.
// Every term keeps its normalizing constant, so lp__ equals hierbench's log_joint.
data {
  int<lower=1> N;  // groups
  int<lower=1> d;  // dimension of theta and of each z_i
  int<lower=0> M;  // observations, all groups
  array[M] int<lower=1, upper=N> group;
  matrix[M, d] x;
  vector[M] y;
}
transformed data {
  for (m in 1:M) {
    if (y[m] != 0 && y[m] != 1) {
      reject("y[", m, "] must be 0 or 1, got ", y[m]);
    }
  }
}
parameters {
  vector[d] theta;
  matrix[N, d] z;  // row i is z_i; output z[i,k] as hierbench's z (N, d)
}
model {
  vector[M] eta = rows_dot_product(x, z[group]);
  target += std_normal_lpdf(theta);
  target += normal_lpdf(to_vector(z) | to_vector(rep_matrix(theta', N)), 1);
  target += dot_product(y, eta) - sum(log1p_exp(eta));
}
