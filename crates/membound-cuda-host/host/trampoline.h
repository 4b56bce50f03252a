// trampoline.h: calls a kernel with cuLaunchKernel's argument convention (params[i] points at
// the i-th argument's value), deducing the parameter types from the kernel itself.
#pragma once
#include <type_traits>
#include <utility>

#include "runtime.h"

template <typename... A, std::size_t... I>
static void mbh_call_impl(void (*f)(A...), void** params, std::index_sequence<I...>) {
    f(*static_cast<std::remove_cv_t<std::remove_reference_t<A>>*>(params[I])...);
}

template <typename... A>
static void mbh_call(void (*f)(A...), void** params) {
    mbh_call_impl(f, params, std::index_sequence_for<A...>{});
}

#define MB_HOST_REGISTER(name) mb_host_register(#name, [](void** p) { mbh_call(name, p); })
