"""Datasets (embedded and torchvision) and partitioners."""

from fedbench.data.dataset import Dataset
from fedbench.data.federated import FederatedData, federate
from fedbench.data.partition import Partitioner, partition_report
from fedbench.data.tensors import TensorData

__all__ = ["Dataset", "FederatedData", "Partitioner", "TensorData", "federate", "partition_report"]
