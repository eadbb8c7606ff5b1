// Conjugate hierarchical linear regression: hierbench.datasets.hier_linear (math in its docstring).
//   theta ~ N(0, I_d),  z_i | theta ~ N(theta, I_d),  y_ij | z_i ~ N(x_ij' z_i, 1).
// Data in long format (one row per observation, `group` 1-based), built by regression_model.
// Every term keeps its normalizing constant (_lpdf, not ~), so lp__ equals hierbench's log_joint.
data {
  int<lower=1> N;  // groups
  int<lower=1> d;  // dimension of theta and of each z_i
  int<lower=0> M;  // observations, all groups
  array[M] int<lower=1, upper=N> group;
  matrix[M, d] x;
  vector[M] y;
}
parameters {
  vector[d] theta;
  matrix[N, d] z;  // row i is z_i; output z[i,k] as hierbench's z (N, d)
}
model {
  target += std_normal_lpdf(theta);
  target += normal_lpdf(to_vector(z) | to_vector(rep_matrix(theta', N)), 1);
  target += normal_lpdf(y | rows_dot_product(x, z[group]), 1);
}
