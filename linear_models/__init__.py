"""linear_models: SVM and softmax linear classifiers trained by minibatch SGD (torch only).

The names follow the EECS 498-007 / CS231n linear-classifier assignment; shapes are
W (D, C), X (N, D), y (N,) int64. ``linear_models.data`` loads and preprocesses CIFAR-10
and image folders.
"""
from .augment import FeatureFlip, pixel_flip_permutation
from .batched import BatchedProgress, BatchedResult, batched_accuracy, batched_predict, train_linear_classifiers_batched
from .classifiers import LinearClassifier, LinearSVM, Softmax, classifier_for_loss, load_classifier
from .gradcheck import grad_check_sparse, rel_error
from .losses import (
    batched_loss_function,
    softmax_loss_batched,
    softmax_loss_naive,
    softmax_loss_vectorized,
    svm_loss_batched,
    svm_loss_naive,
    svm_loss_vectorized,
)
from .optimizers import OPTIMIZERS
from .templates import class_templates, save_template_grid, template_grid
from .train import (
    LR_SCHEDULES,
    TrainingDivergedError,
    accuracy,
    init_weights,
    lr_schedule_factors,
    make_generator,
    predict_linear_classifier,
    sample_batch,
    train_linear_classifier,
)

__all__ = [
    "svm_loss_naive", "svm_loss_vectorized", "softmax_loss_naive", "softmax_loss_vectorized",
    "svm_loss_batched", "softmax_loss_batched", "batched_loss_function",
    "sample_batch", "make_generator", "init_weights", "lr_schedule_factors", "LR_SCHEDULES",
    "train_linear_classifier", "predict_linear_classifier", "accuracy", "TrainingDivergedError",
    "train_linear_classifiers_batched", "batched_accuracy", "batched_predict", "BatchedProgress", "BatchedResult",
    "LinearClassifier", "LinearSVM", "Softmax", "load_classifier", "classifier_for_loss",
    "grad_check_sparse", "rel_error",
    "class_templates", "template_grid", "save_template_grid",
    "OPTIMIZERS", "FeatureFlip", "pixel_flip_permutation",
]
__version__ = "0.1.0"
