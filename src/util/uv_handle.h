// Closes a heap-allocated libuv handle and frees it in its close callback,
// the only moment libuv allows (STYLE.md rule 3). A null handle is ignored.
#pragma once

#include <uv.h>

namespace jobbridge {

template <typename Handle>
void CloseAndDelete(Handle* handle) {
  if (!handle) return;
  uv_close(reinterpret_cast<uv_handle_t*>(handle),
           [](uv_handle_t* h) { delete reinterpret_cast<Handle*>(h); });
}

}  // namespace jobbridge
