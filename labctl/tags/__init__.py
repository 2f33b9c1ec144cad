"""Time tags: PicoQuant TTTR record codecs (:mod:`.records`), PTU files (:mod:`.ptu`), file
summaries (:mod:`.info`), heralded counting (:mod:`.herald`) and cross-correlation histograms
(:mod:`.correlate`). See ``docs/timetags.md``.
"""
from .records import (FORMATS, INVALID, MARKER, OVERFLOW, PHOTON, SYNC, DecodedRecords, RecordFormat,
                      StreamDecoder, StreamEncoder, decode, decode_chunk, encode, record_format)

__all__ = ["FORMATS", "INVALID", "MARKER", "OVERFLOW", "PHOTON", "SYNC", "DecodedRecords",
           "RecordFormat", "StreamDecoder", "StreamEncoder", "decode", "decode_chunk", "encode",
           "record_format"]
