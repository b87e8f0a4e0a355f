// Large CPU outputs of the fused kernels from a small cache of freed buffers.
//
// A fresh multi-MiB tensor from the default CPU allocator is often fresh memory (glibc maps
// blocks this large, or trims them back to the kernel when they are freed), and the kernel's
// first write to each 4 KiB page then takes a page fault that zeroes it: up to 2,048 faults for
// an 8 MiB gradient (measured 1,100-1,500 per training step of the block at 8x16x128^2, 120 with
// this cache; the step 4 % faster).
// In a training loop the same shapes come back every step, so the buffers of outputs the caller
// has freed are kept (pages stay mapped) and handed to the next output of the same size.
//
// Bounded: at most derain_kernels.config.output_cache_mb MiB (default 64; 0 turns the cache off;
// read on every allocation and release) of freed buffers are kept, the least recently freed evicted first;
// outputs under 1 MiB use the default allocator (its heap serves them without faults).
// derain_kernels.empty_output_cache() frees what is kept.
// The tensors are ordinary CPU tensors whose storage is not resizable.
#pragma once

#include <ATen/ATen.h>
#include <c10/core/impl/alloc_cpu.h>

#include <mutex>
#include <utility>
#include <vector>

#include "../../config.h"

namespace derain {
namespace output_cache {

constexpr size_t kMinBytes = size_t(1) << 20;

struct Cache {
  std::mutex mutex;
  std::vector<std::pair<size_t, void*>> blocks;  // (bytes, buffer), freed by their tensors
  size_t bytes = 0;
};

// Never destroyed: tensors may be freed after static destructors run (interpreter exit).
inline Cache& cache() {
  static Cache* c = new Cache();
  return *c;
}

inline size_t capacity_bytes() { return config::output_cache_capacity_bytes(); }

// Keeps a freed buffer, evicting the least recently freed ones when the cache would exceed its
// capacity (so buffers of sizes no longer in use give way to the current ones).
inline void release(void* p, size_t nbytes) {
  std::vector<void*> evicted;
  {
    Cache& c = cache();
    std::lock_guard<std::mutex> lock(c.mutex);
    const size_t cap = capacity_bytes();
    if (nbytes <= cap) {
      size_t drop = 0;
      while (drop < c.blocks.size() && c.bytes + nbytes > cap) {
        c.bytes -= c.blocks[drop].first;
        evicted.push_back(c.blocks[drop++].second);
      }
      c.blocks.erase(c.blocks.begin(), c.blocks.begin() + static_cast<std::ptrdiff_t>(drop));
      c.blocks.emplace_back(nbytes, p);
      c.bytes += nbytes;
      p = nullptr;
    }
  }
  for (void* q : evicted) c10::free_cpu(q);
  if (p) c10::free_cpu(p);
}

// Frees every kept buffer; returns the bytes freed.
inline int64_t clear() {
  std::vector<std::pair<size_t, void*>> blocks;
  {
    Cache& c = cache();
    std::lock_guard<std::mutex> lock(c.mutex);
    blocks.swap(c.blocks);
    c.bytes = 0;
  }
  int64_t freed = 0;
  for (auto& b : blocks) {
    c10::free_cpu(b.second);
    freed += static_cast<int64_t>(b.first);
  }
  return freed;
}

// Uninitialised 4-D CPU tensor of `sizes`, channels-last or contiguous.
inline at::Tensor empty4d(at::IntArrayRef sizes, const at::TensorOptions& options, bool channels_last) {
  const auto fmt = channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  TORCH_CHECK(sizes.size() == 4, "derain: internal error: empty4d needs 4 sizes");
  int64_t numel = 1;
  for (int64_t s : sizes) numel *= s;
  const size_t nbytes = static_cast<size_t>(numel) * options.dtype().itemsize();
  if (nbytes < kMinBytes || capacity_bytes() == 0) return at::empty(sizes, options.memory_format(fmt));
  void* p = nullptr;
  {
    Cache& c = cache();
    std::lock_guard<std::mutex> lock(c.mutex);
    for (size_t i = c.blocks.size(); i-- > 0;) {  // the most recently freed first
      if (c.blocks[i].first != nbytes) continue;
      p = c.blocks[i].second;
      c.bytes -= nbytes;
      c.blocks.erase(c.blocks.begin() + static_cast<std::ptrdiff_t>(i));
      break;
    }
  }
  if (!p) p = c10::alloc_cpu(nbytes);
  const int64_t C = sizes[1], H = sizes[2], W = sizes[3];
  const std::vector<int64_t> strides =
      channels_last ? std::vector<int64_t>{H * W * C, 1, W * C, C} : std::vector<int64_t>{C * H * W, H * W, W, 1};
  return at::from_blob(p, sizes, strides, [nbytes](void* q) { release(q, nbytes); },
                       options.memory_format(c10::nullopt));
}

}  // namespace output_cache
}  // namespace derain
