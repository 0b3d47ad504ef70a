"""Evaluation protocols: how objects are split into the part a map is fitted on and the part it is scored on.

``heldout_images``
    Images are split into train and test (``GroupShuffleSplit``): no image has objects on both sides. The
    test categories were all seen in training, so with one text embedding per category this measures how
    well a map *recognises* categories from vision features: it is close to classification.

``heldout_categories``
    The categories are shuffled (seeded) and dealt into ``K`` folds; in fold ``f`` the categories of that fold
    are *unseen*. The test set is every object of an unseen category. The training set is every object of an
    image that holds **no** unseen-category object, so no image contributes to both fitting and testing (a
    crop's padding or background can show a neighbouring object, so sharing images would let the vision
    features of test objects into PCA and the map). PCA, hyperparameter search and the map are fitted on
    the training set only; the map never sees an unseen category's text embedding. Each category is unseen
    in exactly one fold, so pooling the folds' test predictions scores every object once. The price of
    excluding mixed images is a smaller training set (reported as ``n_train`` per fold).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from objalign.errors import ObjalignError

PROTOCOLS = ("heldout_images", "heldout_categories")


@dataclass(frozen=True)
class Fold:
    """One train/test split.

    Attributes
    ----------
    train, test : ndarray of int
        Object indices.
    unseen : ndarray of int or None
        Category rows held out of training (``heldout_categories``), else None.
    """

    train: np.ndarray
    test: np.ndarray
    unseen: np.ndarray | None = None


def heldout_images(groups: np.ndarray, test_size: float, seed: int) -> list[Fold]:
    """One split with whole images on one side.

    Parameters
    ----------
    groups : (n,) image id of each object
    test_size : float in (0, 1), fraction of images held out
    seed : int

    Returns
    -------
    list of one :class:`Fold`
    """
    from sklearn.model_selection import GroupShuffleSplit

    groups = np.asarray(groups)
    if not (isinstance(test_size, (int, float)) and 0 < test_size < 1):
        raise ObjalignError(f"align.test_size = {test_size}: expected a fraction between 0 and 1, e.g. 0.2")
    if len(np.unique(groups)) < 2:
        raise ObjalignError("align: the embeddings come from a single image; a held-out-image split needs at least 2")
    splitter = GroupShuffleSplit(n_splits=1, test_size=test_size, random_state=seed)
    train, test = next(splitter.split(groups, groups=groups))
    return [Fold(np.sort(train), np.sort(test))]


def heldout_categories(label_index: np.ndarray, groups: np.ndarray, n_folds: int, seed: int) -> list[Fold]:
    """``n_folds`` category folds; fold ``f`` tests its categories and trains on images without them.

    Parameters
    ----------
    label_index : (n,) int
        Category of each object.
    groups : (n,)
        Image id of each object.
    n_folds : int
        Number of category folds ``K`` (``2 <= K <= n_categories``); each holds out about ``1/K`` of them.
    seed : int
        Seed of the category shuffle.

    Returns
    -------
    list of :class:`Fold`, one per category fold (``unseen`` set), test sets disjoint and covering all objects.
    """
    label_index = np.asarray(label_index)
    groups = np.asarray(groups)
    cats = np.unique(label_index)
    if isinstance(n_folds, bool) or not isinstance(n_folds, (int, np.integer)) or not 2 <= n_folds <= len(cats):
        raise ObjalignError(f"align.category_folds = {n_folds!r}: expected an integer from 2 to the number of "
                            f"categories present ({len(cats)})")
    rng = np.random.default_rng(seed)
    folds = []
    for f, unseen in enumerate(np.array_split(rng.permutation(cats), int(n_folds))):
        unseen = np.sort(unseen)
        test = np.flatnonzero(np.isin(label_index, unseen))
        train = np.flatnonzero(~np.isin(groups, np.unique(groups[test])))
        n_seen = len(np.unique(label_index[train]))
        if n_seen < 2:
            raise ObjalignError(
                f"heldout_categories fold {f}: only {len(train)} training objects of {n_seen} categories remain "
                "after removing images that hold unseen categories; raise align.category_folds or sample more images")
        folds.append(Fold(train, test, unseen))
    return folds
