{
  "targets": [
    {
      "target_name": "tunroute_native",
      "sources": ["native/tun.c", "native/aead.c", "native/udp.c"],
      "libraries": ["-lcrypto"],
      "defines": ["NAPI_VERSION=8", "_GNU_SOURCE"],
      "cflags_c": ["-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter", "-O2"]
    }
  ]
}
