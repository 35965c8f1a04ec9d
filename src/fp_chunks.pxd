# Cutting a flat range into fixed-size chunks for the prange loops of the
# compiled modules (each chunk is one unit of work for a thread).
from libc.stdint cimport int64_t

cdef enum:
    CHUNK = 65536      # 2^16 elements per chunk


cdef inline int64_t chunk_len(int64_t c, int64_t n) noexcept nogil:
    """Number of elements in chunk c of a range of n elements."""
    cdef int64_t m = n - c * CHUNK
    return CHUNK if m > CHUNK else m


cdef inline int64_t n_chunks(int64_t n) noexcept nogil:
    return (n + CHUNK - 1) // CHUNK
