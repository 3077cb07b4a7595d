#include "job.h"

#include <algorithm>

namespace ncnn_onnx::cpu {
namespace {

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Enough tasks that a pool of a few threads stays balanced with dynamic scheduling, each task still
// large enough that scheduling costs nothing next to it.
constexpr int64_t kMinTasks = 16;
constexpr double kMinTaskFlops = 2e6;

}  // namespace

Plan MakePlan(const ConvGeometry& g, int64_t strip_columns) {
  Plan p;
  p.strip_columns = strip_columns;
  p.columns = g.batch * g.output_plane;
  p.panels = CeilDiv(g.group_out_channels, kPanelRows);
  const int64_t strips = CeilDiv(p.columns, strip_columns);
  const double strip_flops = 2.0 * static_cast<double>(strip_columns) * static_cast<double>(g.group_out_channels) *
                             static_cast<double>(g.fan_in);
  // Strips per tile: as many as make a task worth scheduling, as few as keep kMinTasks tasks.
  int64_t per_tile = std::max<int64_t>(1, static_cast<int64_t>(kMinTaskFlops / std::max(strip_flops, 1.0)));
  per_tile = std::min(per_tile, std::max<int64_t>(1, strips * g.group / kMinTasks));
  per_tile = std::min(per_tile, std::max<int64_t>(strips, 1));
  p.tile_columns = per_tile * strip_columns;
  p.tiles = CeilDiv(p.columns, p.tile_columns);
  // Few tiles (small outputs, deep layers): split the output channels too. Each chunk rebuilds its strips,
  // which costs about I values per column against chunk * I multiply-adds, so chunks stay >= 4 panels.
  p.chunks = 1;
  const int64_t tile_tasks = p.tiles * g.group;
  if (tile_tasks < kMinTasks / 2 && p.panels >= 8) {
    p.chunks = std::min(CeilDiv(kMinTasks / 2, tile_tasks), p.panels / 4);
  }
  p.chunk_panels = CeilDiv(p.panels, std::max<int64_t>(p.chunks, 1));
  p.chunks = p.panels > 0 ? CeilDiv(p.panels, p.chunk_panels) : 1;
  p.tasks = g.group * p.tiles * p.chunks;
  if (p.columns == 0 || g.group_out_channels == 0) p.tasks = 0;
  return p;
}

}  // namespace ncnn_onnx::cpu
