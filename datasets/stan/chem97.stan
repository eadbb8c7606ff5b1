// A-level chemistry scores (mlmRev Chem97): varying intercept and GCSE slope by school, non-centered.
// Same model as hierbench.datasets.chem97: mu_a, mu_b, gamma ~ N(0, 10^2); sigma_a, sigma_b, sigma_y ~
// half-Normal(0, 5); eta_a[j], eta_b[j] ~ N(0, 1); a = mu_a + sigma_a * eta_a, b = mu_b + sigma_b * eta_b;
// score[n] ~ N(a[school[n]] + b[school[n]] * gcse[n] + gamma * female[n], sigma_y^2), gcse standardised.
// Every term keeps its normalizing constant (half-normal/half-Cauchy: + log 2), so lp__ equals
// hierbench's log_joint at the same unconstrained point.
data {
  int<lower=1> N;  // students
  int<lower=1> J;  // schools
  array[N] int<lower=1, upper=J> school;
  vector[N] gcse;
  vector[N] female;  // 1 = girl, 0 = boy
  vector[N] score;
}
parameters {
  real mu_a;
  real mu_b;
  real gamma;
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
  target += normal_lpdf(gamma | 0, 10);
  target += normal_lpdf(sigma_a | 0, 5) + log2();
  target += normal_lpdf(sigma_b | 0, 5) + log2();
  target += normal_lpdf(sigma_y | 0, 5) + log2();
  target += std_normal_lpdf(eta_a);
  target += std_normal_lpdf(eta_b);
  target += normal_lpdf(score | a[school] + b[school] .* gcse + gamma * female, sigma_y);
}
