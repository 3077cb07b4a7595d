// A growable, cache-line aligned scratch array (aligned loads in the kernels, no false sharing between
// threads). Growing discards the contents: it holds per-call scratch only.
#pragma once

#include <cstddef>
#include <new>

namespace ncnn_onnx::cpu {

template <typename T>
class AlignedBuffer {
 public:
  static constexpr std::size_t kAlignment = 64;

  AlignedBuffer() = default;
  explicit AlignedBuffer(std::size_t size) { Reserve(size); }
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  AlignedBuffer(AlignedBuffer&& other) noexcept : data_(other.data_), capacity_(other.capacity_) {
    other.data_ = nullptr;
    other.capacity_ = 0;
  }
  AlignedBuffer& operator=(AlignedBuffer&& other) noexcept {
    if (this != &other) {
      Free();
      data_ = other.data_;
      capacity_ = other.capacity_;
      other.data_ = nullptr;
      other.capacity_ = 0;
    }
    return *this;
  }
  ~AlignedBuffer() { Free(); }

  // Makes room for `size` elements; the old contents are lost when it has to grow.
  T* Reserve(std::size_t size) {
    if (size > capacity_) {
      Free();
      if (size > static_cast<std::size_t>(-1) / sizeof(T)) throw std::bad_alloc();
      data_ = static_cast<T*>(::operator new(size * sizeof(T), std::align_val_t(kAlignment)));
      capacity_ = size;
    }
    return data_;
  }

  T* data() { return data_; }
  const T* data() const { return data_; }

 private:
  void Free() {
    if (data_ != nullptr) ::operator delete(data_, std::align_val_t(kAlignment));
    data_ = nullptr;
    capacity_ = 0;
  }

  T* data_ = nullptr;
  std::size_t capacity_ = 0;
};

}  // namespace ncnn_onnx::cpu
