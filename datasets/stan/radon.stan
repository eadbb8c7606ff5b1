// Minnesota radon: varying intercept and floor slope by county, non-centered.
// Same model as hierbench.datasets.radon: mu_a, mu_b ~ N(0, 10^2); sigma_a, sigma_b, sigma_y ~
// half-Normal(0, 1); eta_a[j], eta_b[j] ~ N(0, 1); a = mu_a + sigma_a * eta_a, b = mu_b + sigma_b * eta_b;
// log_radon[n] ~ N(a[county_idx[n]] + b[county_idx[n]] * floor_measure[n], sigma_y^2).
// Every term keeps its normalizing constant (half-normal/half-Cauchy: + log 2), so lp__ equals
// hierbench's log_joint at the same unconstrained point.
data {
  int<lower=1> N;  // homes
  int<lower=1> J;  // counties
  array[N] int<lower=1, upper=J> county_idx;
  vector[N] floor_measure;  // 0 = basement, 1 = first floor
  vector[N] log_radon;
}
parameters {
  real mu_a;
  real mu_b;
  real<lower=0> sigma_a;
  real<lower=0> sigma_b;
  real<lower=0> sigma_y;
  vector[J] eta_a;
  vector[J] eta_b;
}
transformed parameters {
  vector[J] a = mu_a + sigma_a * eta_a;
  vector[J] b = mu_b + sigma_b * eta_b;
}
model {
  target += normal_lpdf(mu_a | 0, 10);
  target += normal_lpdf(mu_b | 0, 10);
  target += normal_lpdf(sigma_a | 0, 1) + log2();
  target += normal_lpdf(sigma_b | 0, 1) + log2();
  target += normal_lpdf(sigma_y | 0, 1) + log2();
  target += std_normal_lpdf(eta_a);
  target += std_normal_lpdf(eta_b);
  target += normal_lpdf(log_radon | a[county_idx] + b[county_idx] .* floor_measure, sigma_y);
}
