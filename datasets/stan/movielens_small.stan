// MovieLens: hierarchical logistic regression of liking (rating >= 4) on genre indicators.
// Same model as hierbench.datasets.movielens: mu[k] ~ N(0, 2^2), sigma[k] ~ half-Normal(0, 1),
// z[i, k] ~ N(mu[k], sigma[k]^2), y[n] ~ Bernoulli(inv_logit(x[n] * z[user[n]]')).
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
  matrix[N, K] z;
}
model {
  target += normal_lpdf(mu | 0, 2);
  target += normal_lpdf(sigma | 0, 1) + K * log2();
  for (k in 1:K) {
    target += normal_lpdf(col(z, k) | mu[k], sigma[k]);
  }
  target += bernoulli_logit_lpmf(y | rows_dot_product(x, z[user]));
}
