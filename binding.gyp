{
  "targets": [
    {
      "target_name": "tunroute_native",
      "sources": ["native/tun.c", "native/fake_dns.c", "native/udp.c", "native/batch_reader.c", "native/aead.c", "native/privileges.c", "native/limits.c"],
      "libraries": ["-lcrypto"],
      "defines": ["NAPI_VERSION=8", "_GNU_SOURCE"],
      "cflags_c": ["-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter", "-O2"]
    },
    {
      "target_name": "tunroute_watchdog",
      "type": "executable",
      "sources": ["native/watchdog.c"],
      "defines": ["_GNU_SOURCE"],
      "cflags_c": ["-std=gnu11", "-Wall", "-Wextra", "-O2"]
    }
  ]
}
