// MovieLens: hierarchical logistic regression of liking (rating >= 4) on genre indicators.
// Same model as hierbench.datasets.movielens: mu[k] ~ N(0, 2^2), sigma[k] ~ half-Normal(0, 1),
// z[i, k] ~ N(mu[k], sigma[k]^2), y[n] ~ Bernoulli(inv_logit(x[n] * z[user[n]]')), non-centered:
// z[i, k] = mu[k] + sigma[k] * eta[i, k], eta ~ N(0, 1).
// Long-format training ratings: x[n] = (1, genre indicators) of rating n, user[n] its user.
// Every term keeps its normalizing constant (half-normal/half-Cauchy: + log 2), so lp__ equals
// hierbench's log_joint at the same unconstrained point.
data {
  int<lower=1> N;  // users
  int<lower=1> K;  // features (intercept + genres)
  int<lower=0> n_obs;  // training ratings
  array[n_obs] int<lower=1, upper=N> user;
  matrix[n_obs, K] x;
  array[n_obs] int<lower=0, upper=1> y;
}
parameters {
  vector[K] mu;
  vector<lower=0>[K] sigma;
  matrix[N, K] eta;
}
transformed parameters {
  matrix[N, K] z = rep_matrix(mu', N) + eta .* rep_matrix(sigma', N);
}
model {
  target += normal_lpdf(mu | 0, 2);
  target += normal_lpdf(sigma | 0, 1) + K * log2();
  target += std_normal_lpdf(to_vector(eta));
  target += bernoulli_logit_lpmf(y | rows_dot_product(x, z[user]));
}
