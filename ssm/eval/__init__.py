"""Evaluation: retrieval, zero-shot and word-order metrics, and a text-only baseline."""
from ssm.eval.metrics import (BagOfBytesBaseline, class_embeddings, retrieval_metrics,
                              retrieval_ranks, word_order_accuracy, zero_shot_accuracy)

__all__ = ["retrieval_metrics", "retrieval_ranks", "class_embeddings", "zero_shot_accuracy",
           "word_order_accuracy", "BagOfBytesBaseline"]
