"""TFRecord files of `tf.train.Example` messages, written without TensorFlow.

TensorFlow's import costs 5-10 s per job, more than writing a class's records;
the bytes need none of it. The messages are protobuf's own (upb), built from
the descriptor below, which repeats TensorFlow's `example.proto` and
`feature.proto` (tensorflow/core/example/, package `tensorflow`) field for
field: the wire format is the field numbers and types, so an Example
serialised here is byte for byte the one `tf.train.Example` serialises
(tested against TensorFlow's). The descriptor lives in a private pool, so a
process that also imports TensorFlow sees no clash of names.

A TFRecord is, per record: the data's length (uint64, little-endian), the
masked CRC32C of those 8 bytes, the data, the masked CRC32C of the data
(tensorflow/core/lib/io/record_writer.cc, crc32c.h).
"""

from __future__ import annotations

import struct
from typing import IO

import google_crc32c
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format

_DESCRIPTOR = """
name: "tumbletrain/tf_example.proto"
package: "tensorflow"
syntax: "proto3"
message_type {
  name: "BytesList"
  field { name: "value" number: 1 label: LABEL_REPEATED type: TYPE_BYTES }
}
message_type {
  name: "FloatList"
  field {
    name: "value" number: 1 label: LABEL_REPEATED type: TYPE_FLOAT options { packed: true }
  }
}
message_type {
  name: "Int64List"
  field {
    name: "value" number: 1 label: LABEL_REPEATED type: TYPE_INT64 options { packed: true }
  }
}
message_type {
  name: "Feature"
  field {
    name: "bytes_list" number: 1 label: LABEL_OPTIONAL type: TYPE_MESSAGE
    type_name: ".tensorflow.BytesList" oneof_index: 0
  }
  field {
    name: "float_list" number: 2 label: LABEL_OPTIONAL type: TYPE_MESSAGE
    type_name: ".tensorflow.FloatList" oneof_index: 0
  }
  field {
    name: "int64_list" number: 3 label: LABEL_OPTIONAL type: TYPE_MESSAGE
    type_name: ".tensorflow.Int64List" oneof_index: 0
  }
  oneof_decl { name: "kind" }
}
message_type {
  name: "Features"
  field {
    name: "feature" number: 1 label: LABEL_REPEATED type: TYPE_MESSAGE
    type_name: ".tensorflow.Features.FeatureEntry"
  }
  nested_type {
    name: "FeatureEntry"
    field { name: "key" number: 1 label: LABEL_OPTIONAL type: TYPE_STRING }
    field {
      name: "value" number: 2 label: LABEL_OPTIONAL type: TYPE_MESSAGE
      type_name: ".tensorflow.Feature"
    }
    options { map_entry: true }
  }
}
message_type {
  name: "Example"
  field {
    name: "features" number: 1 label: LABEL_OPTIONAL type: TYPE_MESSAGE
    type_name: ".tensorflow.Features"
  }
}
"""


def _example_class():
    pool = descriptor_pool.DescriptorPool()
    pool.Add(text_format.Parse(_DESCRIPTOR, descriptor_pb2.FileDescriptorProto()))
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.Example"))


Example = _example_class()

_LENGTH = struct.Struct("<Q")
_CRC = struct.Struct("<I")
_MASK_DELTA = 0xA282EAD8
# The wire-format tags of the length-delimited fields on the way down from an
# Example to one bytes value: Example.features (1), Features.feature (1),
# FeatureEntry.key (1) and .value (2), Feature.bytes_list (1), BytesList.value (1).
_FIELD_1 = b"\x0a"
_FIELD_2 = b"\x12"


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _delimited(tag: bytes, length: int) -> bytes:
    return tag + _varint(length)


def example_parts(example, key: str, value: bytes) -> tuple[bytes, bytes, bytes]:
    """`example` with one more feature, `key`: [value], serialised deterministically, in 3 parts.

    The parts joined are `example`'s own deterministic serialisation with that
    feature added; the middle part is `value` itself, so an image's bytes are
    never copied into the message and out again (that was a third of a
    record's cost). Deterministic serialisation writes the map's entries in key
    order, so `key` must sort before every key of `example`: its entry comes
    first, and only that entry's length prefixes and the Example's are written
    here. TensorFlow parses the joined bytes to the same message (tested).
    """
    rest = example.features.SerializeToString(deterministic=True)
    key_bytes = key.encode()
    in_bytes_list = _delimited(_FIELD_1, len(value))
    bytes_list = len(in_bytes_list) + len(value)
    in_feature = _delimited(_FIELD_1, bytes_list)
    feature = len(in_feature) + bytes_list
    in_entry = _delimited(_FIELD_1, len(key_bytes)) + key_bytes + _delimited(_FIELD_2, feature)
    entry = len(in_entry) + feature
    in_features = _delimited(_FIELD_1, entry)
    head = (
        _delimited(_FIELD_1, len(in_features) + entry + len(rest))
        + in_features
        + in_entry
        + in_feature
        + in_bytes_list
    )
    return head, value, rest


def masked_crc(parts: tuple[bytes, ...]) -> bytes:
    """The CRC32C of the parts joined, rotated and offset as TFRecord stores it (crc32c.h)."""
    crc = 0
    for part in parts:
        crc = google_crc32c.extend(crc, part)
    return _CRC.pack((((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF)


def write_record(handle: IO[bytes], *parts: bytes) -> None:
    """Append one record, its data the parts joined, to a file opened for binary writing."""
    length = _LENGTH.pack(sum(map(len, parts)))
    handle.write(length + masked_crc((length,)))
    for part in parts:
        handle.write(part)
    handle.write(masked_crc(parts))
