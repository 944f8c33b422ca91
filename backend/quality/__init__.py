"""How good is the dataset: the share of labeled items a reviewer would rate at least a threshold (good by
default) and the mean level, from the judge's ratings on every item and reviewers' ratings on a sample.

Three figures for each target:

- judge-only: the judge's figure over every rated item. Biased (judges are lenient, favour long answers and
  their own family): no interval, shown for comparison only.
- reviewed-only: the reviewers' figure over the reviewed items, inverse-probability weighted (Hajek ratio
  estimator, 1/pi) when the sample was drawn with unequal probabilities. The share's interval is Wilson's (on
  the effective sample size p(1-p)/variance when weighted or over several rounds); the mean's is normal.
- combined: prediction-powered inference (Angelopoulos et al. 2023, power-tuned PPI++), with sample weights
  1/pi for reviews drawn with unequal probabilities (active inference, Zrnic and Candes 2024), through the
  ppi-python package. Valid whatever the judge's bias; narrower than reviewed-only when the judge is
  informative, about as wide when it is not (the power tuning then leans on the reviews alone).

Rules:

- Inclusion probabilities. Each review carries `inclusion_probability`, the probability with which its item was
  drawn into its round among the round's candidates. Only their relative sizes within a round matter (ppi-python
  normalises the weights). Reviews without it are refused (QualityInputError naming the file, the line or task
  and the field) unless `assume_random` declares them a uniform random sample of the labeled items.
- Rounds. A round's pi is relative to that round's candidates, so rounds are never pooled with 1/pi weights
  (a small round's pi is small and would be over-weighted). Rounds are taken in the order push names them
  (round-1, round-2, ..., reviews without a round first), each drawn from the items not reviewed in an earlier
  round. Round r estimates the mean over its candidates, and the items reviewed before it count with their
  reviewers' values, known: (N_r * candidates' estimate + sum over earlier reviews) / N. Given the past, each
  round's error has mean zero, so the errors are uncorrelated and the variance of a weighted combination is the
  weighted sum of the rounds' variances. The weights are design-based inverse variances, n_eff_r * (N / N_r)^2
  with n_eff_r the Kish effective size of the round's weights: they do not depend on what reviewers said (an
  outcome-based inverse variance gives all the weight to a small round whose reviewers happened to agree).
  A round with fewer than 3 matched reviews gives no variance: it is left out of the estimate (its items still
  count as known for later rounds) and a warning says so. Pushed items that nobody reviewed are not seen here;
  the reviews are taken to be the drawn sample (skipping hard items would bias every figure).
- Matching. A review counts for a labeled item when the source ids match and it rated the same label text
  (whitespace-stripped); otherwise it is counted as "reviewed another version of the label" and left out.
  Reviews whose source id is not among the labels, reviews without a reviewer rating and a second review of
  an item are counted and left out.
- Unrated items (a label but no judge rating) stay in the population; their prediction is imputed with the
  judge's mean over the rated items (the PPI correction is valid for any imputation fixed without the reviews).
- Anchored ratings (`rating_anchored`: old configs pre-filled the reviewer's rating from the judge) are used,
  counted, and warned about: they pull reviewers toward the judge, so agreement is inflated and the intervals
  lean toward the judge.
- Agreement: quadratic-weighted kappa of the judge's level vs the reviewer's on the reviewed items, with a
  seeded percentile bootstrap interval; calibration is the reviewers' mean level and share at least the
  threshold per judge level, on the reviewed items (unweighted: a routed sample over-represents hard items).
- The target is the figure over these N labeled items, whose judge ratings are all known: ppi-python's term
  for a judge mean estimated from a sample of a larger population is left out; the rest of its variance is
  kept whole (no finite-population correction: on the safe side).
- Power tuning is cross-fitted: lambda fitted on the reviews it corrects biases the estimate by order 1/n (half
  a point on a share from a round of 100, which combining rounds does not average out). Each round's reviews are
  split into 10 folds (at most; one review a fold below 10), by a seeded permutation of the reviewed items in
  population order, so the split depends on which items were reviewed, not on what reviewers said or on the file's
  order; each fold is corrected with the lambda fitted on the other folds, and the folds' PPI++ estimates are
  averaged by their share of the weights. For a fixed judge the estimate is then unbiased. Its variance is the
  Hajek variance of y - lambda_fold * (judge - judge's mean) with n/(n-1), and Student's t on n-1 degrees of
  freedom in place of z.
- Reviews needed: the variance shrinks as 1/n; assuming new reviews are drawn the way the current ones were
  and the judge does not change, n' = n * variance / (width / 2z)^2.
"""

from prelabel.quality.inputs import QualityInputError, read_labels, read_reviews
from prelabel.quality.report import QualityReport, build_report

__all__ = ["QualityInputError", "QualityReport", "build_report", "read_labels", "read_reviews"]
