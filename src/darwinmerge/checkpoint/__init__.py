"""Checkpoint I/O: lazy sharded reader, streaming atomic writer, side files, model card,
and the one writer of tensors into a resident model (:func:`write_into_model`)."""

from darwinmerge.checkpoint.header import SAFETENSORS_DTYPES, TensorInfo, read_safetensors_header
from darwinmerge.checkpoint.model_card import write_model_card
from darwinmerge.checkpoint.model_writer import ModelWriter, write_into_model
from darwinmerge.checkpoint.reader import CheckpointReader
from darwinmerge.checkpoint.side_files import SIDE_FILES, copy_side_files
from darwinmerge.checkpoint.tokenizer import TOKENIZER_FILES, has_tokenizer_files, load_tokenizer
from darwinmerge.checkpoint.writer import DEFAULT_MAX_SHARD_BYTES, CheckpointWriter

__all__ = [
    "CheckpointReader",
    "CheckpointWriter",
    "DEFAULT_MAX_SHARD_BYTES",
    "ModelWriter",
    "SAFETENSORS_DTYPES",
    "SIDE_FILES",
    "TOKENIZER_FILES",
    "TensorInfo",
    "copy_side_files",
    "has_tokenizer_files",
    "load_tokenizer",
    "read_safetensors_header",
    "write_into_model",
    "write_model_card",
]
