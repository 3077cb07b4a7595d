// Where the columns of one strip come from and go to. Columns are n*P + p over the whole batch, so a strip
// may straddle images; it splits into runs (consecutive positions along the last spatial dim of one image
// row: their patch values are contiguous in X when the last stride is 1) and segments (consecutive
// positions of one image: contiguous in Y).
#pragma once

#include <cstdint>

#include "../common/geometry.h"

namespace ncnn_onnx::cpu {

constexpr int kMaxStripColumns = 48;

// Spatial dims right-aligned into 3 (leading dims of size 1), so one 3-d loop serves every rank.
struct Spatial3 {
  int64_t input[3], kernel[3], output[3], stride[3], dilation[3], pad[3];
};

inline Spatial3 RightAlign(const ConvGeometry& g) {
  Spatial3 s;
  const int lead = 3 - g.ndim;
  for (int d = 0; d < 3; ++d) {
    const int src = d - lead;
    const bool real = src >= 0;
    s.input[d] = real ? g.input[src] : 1;
    s.kernel[d] = real ? g.kernel[src] : 1;
    s.output[d] = real ? g.output[src] : 1;
    s.stride[d] = real ? g.stride[src] : 1;
    s.dilation[d] = real ? g.dilation[src] : 1;
    s.pad[d] = real ? g.pad_begin[src] : 0;
  }
  return s;
}

struct Run {
  int64_t begin, length;  // strip columns
  int64_t image;          // n
  int64_t row0, row1;     // output coords of the two leading dims
  int64_t first;          // output coord along the last dim of column `begin`
};

struct Segment {
  int64_t begin, end;  // strip columns
  int64_t y_offset;    // n*M*P + p of column `begin`, for output channel 0
};

struct StripMap {
  int64_t width = 0;
  int runs = 0;
  int segments = 0;
  Run run[kMaxStripColumns];
  Segment segment[kMaxStripColumns];
};

inline void MapStrip(const ConvGeometry& g, const Spatial3& s, int64_t first_column, int64_t width, StripMap* map) {
  const int64_t plane = g.output_plane;
  int64_t n = first_column / plane;
  int64_t p = first_column % plane;
  int64_t o2 = p % s.output[2];
  int64_t o1 = (p / s.output[2]) % s.output[1];
  int64_t o0 = p / (s.output[2] * s.output[1]);
  map->width = width;
  map->runs = 0;
  map->segments = 0;
  const int64_t y_image = g.out_channels * plane;
  for (int64_t j = 0; j < width; ++j) {
    if (j == 0 || o2 == 0) map->run[map->runs++] = Run{j, 0, n, o0, o1, o2};
    ++map->run[map->runs - 1].length;
    if (j == 0 || p == 0) map->segment[map->segments++] = Segment{j, j, n * y_image + p};
    map->segment[map->segments - 1].end = j + 1;
    // Next column: the last dim moves fastest, then the leading dims, then the image.
    ++p;
    if (++o2 == s.output[2]) {
      o2 = 0;
      if (++o1 == s.output[1]) {
        o1 = 0;
        if (++o0 == s.output[0]) {
          o0 = 0;
          p = 0;
          ++n;
        }
      }
    }
  }
}

}  // namespace ncnn_onnx::cpu
