"""Labelled univariate benchmark (`make eval-scorer`): streaming scorers under the NAB scoring rules.

Rules (written from the Numenta Anomaly Benchmark's published description; :mod:`.nab`):

- Each labelled anomaly gets a window of total length 10% of the series divided by its number of
  anomalies, centred on the label. Our labels are windows (the injected anomaly's extent); the NAB
  window is centred on the label's *start*, the onset, so early detection of a change is rewarded
  and a long anomaly does not earn a long window. Overlapping windows are merged.
- The first 15% of each series (at most 750 points) is probationary: detections there are ignored.
- A detection is a point whose score is ≥ the threshold. Only the first detection in a window
  counts and earns ``A_TP · σ(y)/σ(−1)``, σ(y) = 2/(1+e^{5y}) − 1, y = −(end − i + 1)/width (1 at
  the window's first point, ≈ 0 at its last; NAB's sweeper divides by σ(−1) ≈ 0.987 too). A detection outside every window costs
  ``A_FP · σ(y)`` with y = (i − end of the preceding window)/(width − 1) — nearly free just after a
  window, the full weight from three window lengths on — or the full ``A_FP`` when no window
  precedes it. A window without detection costs ``A_FN``.
- One threshold per detector and profile for the whole corpus, chosen to maximise the total (an
  exact sweep over every distinct score, computed once from cached per-series score arrays).
- Profiles: standard (A_TP 1, A_FP 0.11, A_FN 1), reward_low_FP (A_FP 0.22), reward_low_FN (A_FN 2).
- Normalised score = 100 · (raw − null)/(perfect − null); null = no detections (−A_FN per window),
  perfect = every window detected at its first point. A never-firing detector scores exactly 0.

Corpus (:mod:`.corpus`, every injection documented there): per seed, ten synthetic 5-minute
categories (spikes/dips, level shifts, variance changes, stuck values, trend changes, daily-pattern
changes, slow drifts, sparse counts with bursts, daily square waves, 2–4 mixed anomalies in one
series) plus two series with no anomaly, and half of ten real series shipped by River and
statsmodels, each with one injected anomaly and its own known anomalies labelled. Scales span
10^-3…10^6, with Gaussian, heavy-tailed and autocorrelated noise, negative-binomial and Poisson
counts, quantised values, daily/weekly seasonality, forward-filled dropouts, missing timestamps
and unlabelled incidents inside the probationary period.

Split by seed: tuning = seeds 0–3, held-out = seeds 4–7 (68 series each; every category and real
series in both). Tune on the tuning half; report the held-out one.

Detectors (:mod:`.detectors`), each a fresh ``clone()`` per series, ``score_one`` before
``learn_one``: the default ``OnlineScorer()``, River's ``GaussianScorer``, River's
``HalfSpaceTrees`` on min-max-scaled lagged values, and a constant 0; on request ``random`` and
``gaussian_w1000`` as references, or any ``module:callable``.

Usage: ``python -m bench.scorer_eval [--split tuning|heldout|all] [--detectors online gaussian …]
[--category spike real …] [--limit N] [--profile standard] [--per-series] [--json PATH]
[--dump-scores PATH.npz] [--bootstrap N]``.
"""
