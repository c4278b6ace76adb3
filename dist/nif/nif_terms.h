// Term building and argument parsing shared by the NIF libraries
// (macula_nif, and the relay's macula_relay_nif above this room). Plain
// functions of an environment: any thread that owns `env`.
#pragma once

#include <erl_nif.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "connection_handle.h"

namespace macula::nif {

inline ERL_NIF_TERM atom(ErlNifEnv* env, const char* name) {
  return enif_make_atom(env, name);
}

// Raises error:{badarg, Which}: the caller learns which argument was wrong.
inline ERL_NIF_TERM badarg(ErlNifEnv* env, const char* which) {
  return enif_raise_exception(env, enif_make_tuple2(env, atom(env, "badarg"), atom(env, which)));
}

// A fresh binary holding a copy of the bytes.
inline ERL_NIF_TERM binary(ErlNifEnv* env, const void* data, size_t size) {
  ERL_NIF_TERM bin;
  unsigned char* p = enif_make_new_binary(env, size, &bin);
  if (size) std::memcpy(p, data, size);
  return bin;
}

inline ERL_NIF_TERM binary(ErlNifEnv* env, std::string_view s) {
  return binary(env, s.data(), s.size());
}

// {error, Text} with Text a binary.
inline ERL_NIF_TERM error_tuple(ErlNifEnv* env, std::string_view text) {
  return enif_make_tuple2(env, atom(env, "error"), binary(env, text));
}

// An iolist or binary as bytes.
inline bool get_string(ErlNifEnv* env, ERL_NIF_TERM t, std::string& out) {
  ErlNifBinary bin;
  if (!enif_inspect_iolist_as_binary(env, t, &bin)) return false;
  out.assign(reinterpret_cast<char*>(bin.data), bin.size);
  return true;
}

// Map entries by atom key. An absent key leaves `out` as it is and is
// fine unless `required`; a present one must have the right type.
inline bool map_string(ErlNifEnv* env, ERL_NIF_TERM map, const char* key, std::string& out,
                       bool required = false) {
  ERL_NIF_TERM v;
  if (!enif_get_map_value(env, map, atom(env, key), &v)) return !required;
  return get_string(env, v, out);
}

inline bool map_uint64(ErlNifEnv* env, ERL_NIF_TERM map, const char* key, uint64_t& out,
                       bool required = false) {
  ERL_NIF_TERM v;
  ErlNifUInt64 n;
  if (!enif_get_map_value(env, map, atom(env, key), &v)) return !required;
  if (!enif_get_uint64(env, v, &n)) return false;
  out = n;
  return true;
}

// Why a connection closed: {Kind, Code, Text} for the kinds that carry a
// code (the peer's, a TLS alert, a protocol error; a local close too if
// `local_code`), else the bare Kind atom (idle_timeout...).
inline ERL_NIF_TERM close_reason(ErlNifEnv* env, const CloseInfo& info, bool local_code) {
  ERL_NIF_TERM kind = atom(env, close_kind_name(info.kind));
  switch (info.kind) {
    case CloseInfo::Kind::kLocal:
      if (!local_code) return kind;
      [[fallthrough]];
    case CloseInfo::Kind::kPeer:
    case CloseInfo::Kind::kTlsAlert:
    case CloseInfo::Kind::kProtocol:
      return enif_make_tuple3(env, kind, enif_make_uint64(env, info.code),
                              binary(env, info.text));
    default:
      return kind;
  }
}

}  // namespace macula::nif
