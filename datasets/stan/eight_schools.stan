// Eight schools, non-centered (posteriordb eight_schools-eight_schools_noncentered).
// Same model as hierbench.datasets.eight_schools: mu ~ N(0, 5^2), tau ~ half-Cauchy(0, 5),
// theta_trans[j] ~ N(0, 1), y[j] ~ N(mu + tau * theta_trans[j], sigma[j]^2).
// Every term keeps its normalizing constant (half-normal/half-Cauchy: + log 2), so lp__ equals
// hierbench's log_joint at the same unconstrained point.
data {
  int<lower=0> J;
  array[J] real y;
  array[J] real<lower=0> sigma;
}
parameters {
  vector[J] theta_trans;
  real mu;
  real<lower=0> tau;
}
transformed parameters {
  vector[J] theta = theta_trans * tau + mu;
}
model {
  target += normal_lpdf(mu | 0, 5);
  target += cauchy_lpdf(tau | 0, 5) + log2();
  target += std_normal_lpdf(theta_trans);
  target += normal_lpdf(y | theta, sigma);
}
