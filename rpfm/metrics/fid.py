"""Fréchet Inception Distance: the distance between two Gaussians, feature statistics, and their cache files.

    FID = ||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr( (S1 S2)^(1/2) )

computed in float64. The features come from an extractor in :mod:`rpfm.metrics.inception` (2048-d Inception-v3
pool features); this module is plain numpy and never sees images.

Matrix square root, two routes (``method=``):
  * ``"sqrtm"`` -- ``scipy.linalg.sqrtm(S1 @ S2)`` exactly as pytorch-fid and CFLD do: if the result is not finite
    (a singular product), retry with ``eps`` added to both diagonals; a complex result whose diagonal has an
    imaginary part above 1e-3 raises ValueError, smaller imaginary parts (round-off) are dropped. SciPy >= 1.16
    warns (LinAlgWarning) on singular or ill-conditioned products, which is routine when there are fewer samples
    than dimensions; that warning is silenced here, the eps retry still applies.
  * ``"eigh"`` -- numpy only: tr((S1 S2)^(1/2)) = sum sqrt(eig(A S2 A)) with A = S1^(1/2) from ``eigh`` (S1 S2 is
    similar to the symmetric PSD A S2 A, so the eigenvalues are real and >= 0; round-off negatives are clipped).
    No imaginary parts, no retry needed. Used by ``"auto"`` when SciPy is not installed.

Statistics of a real set (the CFLD/PIDM protocol uses the whole DeepFashion training set) are cached as ``.npz``
via :class:`FeatureStats` (read with ``allow_pickle=False``: a cache file can never run code).
"""
from __future__ import annotations

import json
import os
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..fileio import atomic_path

FID_METHODS = ("auto", "sqrtm", "eigh")
_IMAG_ATOL = 1e-3           # pytorch-fid's tolerance on the imaginary part of diag(sqrtm)


def _scipy_linalg():
    try:
        import scipy.linalg
    except ImportError:
        return None
    return scipy.linalg


# ---------------------------------------------------------------------------------------------------- distance
def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, *,
                     eps: float = 1e-6, method: str = "auto") -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), in float64.

    Args:
        mu1, mu2: means, shape (D,).
        sigma1, sigma2: covariances, shape (D, D), symmetric positive semi-definite.
        eps: diagonal offset for the retry when the matrix square root of a singular product is not finite.
        method: "auto" (SciPy's sqrtm when SciPy is installed, else "eigh"), "sqrtm" or "eigh" (module docstring).

    Returns:
        The distance as a Python float (may be a tiny negative number from round-off for identical inputs).
    """
    if method not in FID_METHODS:
        raise ValueError(f"method: expected one of {list(FID_METHODS)}, got {method!r}.")
    mu1, mu2 = (np.atleast_1d(np.asarray(m, dtype=np.float64)) for m in (mu1, mu2))
    sigma1, sigma2 = (np.atleast_2d(np.asarray(s, dtype=np.float64)) for s in (sigma1, sigma2))
    for name, mu in (("mu1", mu1), ("mu2", mu2)):
        if mu.ndim != 1:
            raise ValueError(f"{name}: expected a mean vector of shape (D,), got {mu.shape}.")
    d = mu1.shape[0]
    if mu2.shape != (d,):
        raise ValueError(f"mu1 and mu2: expected the same dimension, got {mu1.shape} and {mu2.shape}. Compare "
                         "statistics from the same feature extractor.")
    for name, s in (("sigma1", sigma1), ("sigma2", sigma2)):
        if s.shape != (d, d):
            raise ValueError(f"{name}: expected a ({d}, {d}) covariance to match the means, got {s.shape}.")
    for name, a in (("mu1", mu1), ("sigma1", sigma1), ("mu2", mu2), ("sigma2", sigma2)):
        if not np.isfinite(a).all():
            raise ValueError(f"{name}: contains NaN or Inf. Recompute the statistics from finite features.")

    diff = mu1 - mu2
    linalg = _scipy_linalg()
    if method == "sqrtm" and linalg is None:
        raise ImportError("method='sqrtm' needs SciPy: pip install 'rpfm[eval]' (or pip install scipy), or use "
                          "method='eigh'.")
    if method == "eigh" or (method == "auto" and linalg is None):
        tr_covmean = _trace_sqrt_product_eigh(sigma1, sigma2)
    else:
        tr_covmean = _trace_sqrt_product_sqrtm(linalg, sigma1, sigma2, eps)
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean)


def _sqrtm_quiet(linalg, a: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", linalg.LinAlgWarning)   # singular / ill-conditioned: handled by the caller
        return linalg.sqrtm(a)


def _trace_sqrt_product_sqrtm(linalg, sigma1: np.ndarray, sigma2: np.ndarray, eps: float) -> float:
    """tr((S1 S2)^(1/2)) via scipy.linalg.sqrtm, with pytorch-fid's eps retry and imaginary-part check."""
    covmean = _sqrtm_quiet(linalg, sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = _sqrtm_quiet(linalg, (sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=_IMAG_ATOL):
            m = np.max(np.abs(covmean.imag))
            raise ValueError(f"frechet_distance: the matrix square root has an imaginary component of {m:.3g} "
                             "(the covariances are not positive semi-definite, or are badly conditioned). Use "
                             "more samples, or method='eigh'.")
        covmean = covmean.real
    return float(np.trace(covmean))


def _trace_sqrt_product_eigh(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """tr((S1 S2)^(1/2)) = sum sqrt(eig(A S2 A)), A = S1^(1/2); numpy only."""
    w, v = np.linalg.eigh((sigma1 + sigma1.T) / 2)
    a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T                   # S1^(1/2), symmetric PSD
    m = a @ sigma2 @ a
    ev = np.linalg.eigvalsh((m + m.T) / 2)
    return float(np.sqrt(np.clip(ev, 0, None)).sum())


# ---------------------------------------------------------------------------------------------------- stats
def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file, read with ``allow_pickle=False`` (object arrays are refused: a file can never
    run code). Any unreadable file -- truncated, pickled, a single ``.npy`` array, not numpy -- raises ValueError
    with the reason."""
    try:
        with open(path, "rb") as fh:                            # our handle: numpy leaks its own on a bad zip
            z = np.load(fh, allow_pickle=False)
            if not isinstance(z, np.lib.npyio.NpzFile):
                raise ValueError("it holds a single array, not named arrays")
            with z:
                return {k: z[k] for k in z.files}               # reads everything now, while the file is open
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(str(err)) from err


@dataclass(frozen=True)
class FeatureStats:
    """Gaussian statistics of a feature set: mean (D,), covariance (D, D) (float64, ``np.cov`` with N-1), count.

    ``extractor`` names the network that produced the features (e.g. ``rpfm.metrics.inception`` extractors'
    ``.name``), so a cache computed with one Inception is not silently compared with another. ``meta`` is free
    JSON-serialisable provenance (``rpfm eval`` records the dataset root, split, image count and resize there and
    reuses a cache only when it matches); it is stored as a JSON string, never pickled.
    """

    mu: np.ndarray
    sigma: np.ndarray
    n: int
    extractor: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        mu = np.asarray(self.mu, dtype=np.float64)
        sigma = np.asarray(self.sigma, dtype=np.float64)
        if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
            raise ValueError(f"FeatureStats: expected mu (D,) and sigma (D, D), got {mu.shape} and {sigma.shape}.")
        if int(self.n) < 2:
            raise ValueError(f"FeatureStats: n must be >= 2 for a covariance, got {self.n}.")
        object.__setattr__(self, "mu", mu)
        object.__setattr__(self, "sigma", sigma)
        object.__setattr__(self, "n", int(self.n))
        object.__setattr__(self, "extractor", str(self.extractor))
        try:
            meta = json.loads(json.dumps(dict(self.meta), sort_keys=True))   # a plain, JSON-round-tripped copy
        except (TypeError, ValueError) as err:
            msg = f"FeatureStats: meta must be a JSON-serialisable dict, got {self.meta!r} ({err})."
            raise ValueError(msg) from err
        object.__setattr__(self, "meta", meta)

    @classmethod
    def from_features(cls, features: np.ndarray, extractor: str = "",
                      meta: dict[str, Any] | None = None) -> "FeatureStats":
        """Statistics of features (N, D) (numpy or torch; computed in float64)."""
        f = _as_features(features, "features")
        return cls(mu=f.mean(axis=0), sigma=np.cov(f, rowvar=False), n=f.shape[0], extractor=extractor,
                   meta=meta or {})

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``mu``, ``sigma``, ``n``, ``extractor`` and ``meta`` (as JSON text) to an ``.npz`` file (atomically,
        no pickled objects)."""
        path = Path(path)
        if path.suffix != ".npz":
            raise ValueError(f"path: FeatureStats are saved as .npz, got '{path}'. Use a name ending in .npz.")
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:                             # a file object: np.savez must not add ".npz"
                np.savez(f, mu=self.mu, sigma=self.sigma, n=np.int64(self.n), extractor=np.str_(self.extractor),
                         meta=np.str_(json.dumps(self.meta, sort_keys=True)))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, *, expect_extractor: str | None = None) -> "FeatureStats":
        """Read a file written by :meth:`save`; ``expect_extractor`` (if given) must match the stored name."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"stats: no file at '{path}'. Compute the real-set statistics first "
                                    "(FeatureStats.from_features(...).save(path)).")
        try:
            arrays = read_npz(path)
        except ValueError as err:
            raise ValueError(f"stats: '{path}' is not a readable .npz file ({err}). Recompute it.") from err
        missing = {"mu", "sigma", "n"} - set(arrays)
        if missing:
            raise ValueError(f"stats: '{path}' lacks {sorted(missing)}; it was not written by FeatureStats.save. "
                             "Recompute it.")
        try:
            meta = json.loads(str(arrays["meta"])) if "meta" in arrays else {}
        except json.JSONDecodeError as err:
            raise ValueError(f"stats: '{path}' has unreadable metadata ({err}). Recompute it.") from err
        if not isinstance(meta, dict):
            raise ValueError(f"stats: '{path}' has metadata of type {type(meta).__name__}, expected a JSON object. "
                             "Recompute it.")
        stats = cls(mu=arrays["mu"], sigma=arrays["sigma"], n=int(arrays["n"]),
                    extractor=str(arrays.get("extractor", "")), meta=meta)
        if expect_extractor is not None and stats.extractor != expect_extractor:
            raise ValueError(f"stats: '{path}' was computed with extractor {stats.extractor!r}, but "
                             f"{expect_extractor!r} is in use. Recompute the statistics with this extractor, or "
                             "select the extractor the cache was made with.")
        return stats

    def frechet_distance(self, other: "FeatureStats", **kwargs) -> float:
        """FID between these statistics and ``other`` (keyword arguments go to :func:`frechet_distance`)."""
        return frechet_distance(self.mu, self.sigma, other.mu, other.sigma, **kwargs)


class RunningStats:
    """Streaming mean/covariance over feature batches (Chan et al.'s pairwise update, float64).

    For large real sets (the whole DeepFashion training set) without holding all features in memory; the
    result equals ``FeatureStats.from_features`` on the concatenated features up to float64 round-off.
    """

    def __init__(self, extractor: str = "", meta: dict[str, Any] | None = None) -> None:
        self.extractor = extractor
        self.meta = dict(meta or {})
        self.n = 0
        self._mean: np.ndarray | None = None
        self._m2: np.ndarray | None = None                          # sum of outer products of deviations

    def update(self, features: np.ndarray) -> None:
        """Add a batch of features (B, D)."""
        f = _as_features(features, "features", min_rows=1)
        nb, mb = f.shape[0], f.mean(axis=0)
        db = f - mb
        m2b = db.T @ db
        if self._mean is None:
            self.n, self._mean, self._m2 = nb, mb, m2b
            return
        if f.shape[1] != self._mean.shape[0]:
            raise ValueError(f"features: expected dimension {self._mean.shape[0]} like the earlier batches, got "
                             f"{f.shape[1]}.")
        n = self.n + nb
        delta = mb - self._mean
        self._mean = self._mean + delta * (nb / n)
        self._m2 = self._m2 + m2b + np.outer(delta, delta) * (self.n * nb / n)
        self.n = n

    def finalize(self) -> FeatureStats:
        if self._mean is None or self.n < 2:
            raise ValueError(f"RunningStats: need at least 2 features for a covariance, got {self.n}.")
        return FeatureStats(mu=self._mean.copy(), sigma=self._m2 / (self.n - 1), n=self.n, extractor=self.extractor,
                            meta=self.meta)


def fid_from_features(features1: np.ndarray, features2: np.ndarray, **kwargs) -> float:
    """FID between two feature sets (N1, D) and (N2, D) (keyword arguments go to :func:`frechet_distance`)."""
    s1 = FeatureStats.from_features(_as_features(features1, "features1"))
    s2 = FeatureStats.from_features(_as_features(features2, "features2"))
    if s1.mu.shape != s2.mu.shape:
        raise ValueError(f"features1 and features2: expected the same feature dimension, got {s1.mu.shape[0]} and "
                         f"{s2.mu.shape[0]}.")
    return s1.frechet_distance(s2, **kwargs)


def _as_features(features, name: str, min_rows: int = 2) -> np.ndarray:
    if hasattr(features, "detach"):                                 # torch tensor
        features = features.detach().cpu().numpy()
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2:
        raise ValueError(f"{name}: expected a (N, D) feature matrix, got shape {f.shape}.")
    if f.shape[0] < min_rows:
        raise ValueError(f"{name}: expected at least {min_rows} feature rows, got {f.shape[0]}.")
    if not np.isfinite(f).all():
        raise ValueError(f"{name}: contains NaN or Inf. Check the images and the extractor's weights.")
    return f
