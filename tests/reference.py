"""Independent numpy/scikit-learn implementations of the community procedures (docs/protocols.md §3, §5).

Written from the protocol text, in the style of insightface's eval_ijbc.py and verification.py,
and used only as test references.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_curve
from sklearn.model_selection import KFold
from sklearn.preprocessing import normalize


def image2template_feature(img_feats, templates, medias):
    unique_templates = np.unique(templates)
    template_feats = np.zeros((len(unique_templates), img_feats.shape[1]))
    for count_template, uqt in enumerate(unique_templates):
        (ind_t,) = np.where(templates == uqt)
        face_norm_feats = img_feats[ind_t]
        face_medias = medias[ind_t]
        unique_medias, unique_media_counts = np.unique(face_medias, return_counts=True)
        media_norm_feats = []
        for u, ct in zip(unique_medias, unique_media_counts):
            (ind_m,) = np.where(face_medias == u)
            if ct == 1:
                media_norm_feats += [face_norm_feats[ind_m]]
            else:
                media_norm_feats += [np.mean(face_norm_feats[ind_m], axis=0, keepdims=True)]
        media_norm_feats = np.array(media_norm_feats)
        template_feats[count_template] = np.sum(media_norm_feats, axis=0)
    template_norm_feats = normalize(template_feats)
    return template_norm_feats, unique_templates


def verification(template_norm_feats, unique_templates, p1, p2, batchsize=100000):
    template2id = {int(t): i for i, t in enumerate(unique_templates)}
    i1 = np.array([template2id[int(t)] for t in p1], dtype=np.int64)
    i2 = np.array([template2id[int(t)] for t in p2], dtype=np.int64)
    score = np.zeros((len(p1),))
    for s in range(0, len(p1), batchsize):
        sl = slice(s, s + batchsize)
        score[sl] = np.sum(template_norm_feats[i1[sl]] * template_norm_feats[i2[sl]], -1)
    return score


def community_image_feats(feats, flip=None, faceness=None, normalize_images=False):
    x = feats.astype(np.float32) if flip is None else (feats + flip).astype(np.float32)
    if normalize_images:
        x = x / np.sqrt(np.sum(x**2, -1, keepdims=True))
    if faceness is not None:
        x = x * faceness[:, np.newaxis]
    return x


def tar_nearest(labels, scores, fars):
    """insightface's pick: flip the ROC so the first minimum is the largest TPR."""
    fpr, tpr, thr = roc_curve(labels, scores)
    fpr = np.flipud(fpr)
    tpr = np.flipud(tpr)
    thr = np.flipud(thr)
    out, out_thr = [], []
    for x in fars:
        _, min_index = min(list(zip(abs(fpr - x), range(len(fpr)))))
        out.append(tpr[min_index])
        out_thr.append(thr[min_index])
    return np.array(out), np.array(out_thr)


def tar_at_most(labels, scores, fars):
    fpr, tpr, _ = roc_curve(labels, scores)
    return np.array([tpr[fpr <= x].max() for x in fars])


def calculate_accuracy(threshold, dist, actual_issame):
    predict_issame = np.less(dist, threshold)
    tp = np.sum(np.logical_and(predict_issame, actual_issame))
    tn = np.sum(np.logical_and(np.logical_not(predict_issame), np.logical_not(actual_issame)))
    return float(tp + tn) / dist.size


def lfw_kfold(embeddings1, embeddings2, actual_issame, nrof_folds=10):
    """insightface verification.py calculate_roc (accuracy part)."""
    thresholds = np.arange(0, 4, 0.01)
    embeddings1 = normalize(embeddings1)
    embeddings2 = normalize(embeddings2)
    nrof_pairs = min(len(actual_issame), embeddings1.shape[0])
    k_fold = KFold(n_splits=nrof_folds, shuffle=False)
    accuracy = np.zeros(nrof_folds)
    best = np.zeros(nrof_folds)
    diff = np.subtract(embeddings1, embeddings2)
    dist = np.sum(np.square(diff), 1)
    indices = np.arange(nrof_pairs)
    for fold_idx, (train_set, test_set) in enumerate(k_fold.split(indices)):
        acc_train = np.zeros(len(thresholds))
        for threshold_idx, threshold in enumerate(thresholds):
            acc_train[threshold_idx] = calculate_accuracy(threshold, dist[train_set], actual_issame[train_set])
        best_threshold_index = np.argmax(acc_train)
        best[fold_idx] = thresholds[best_threshold_index]
        accuracy[fold_idx] = calculate_accuracy(thresholds[best_threshold_index], dist[test_set], actual_issame[test_set])
    return accuracy, best, dist
