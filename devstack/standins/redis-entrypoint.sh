#!/bin/sh
# The official image's entrypoint contract, on Debian's redis-server.
set -e
case "${1:-}" in
  -*|*.conf) set -- redis-server "$@" ;;
esac
if [ "$1" = redis-server ]; then
  case " $* " in
    *".conf "*) ;;
    *) set -- "$@" --protected-mode no ;;  # reachable by other containers, as in the official image
  esac
  if [ "$(id -u)" = 0 ]; then
    find . \! -user redis -exec chown redis:redis '{}' +
    exec setpriv --reuid=redis --regid=redis --init-groups "$@"
  fi
fi
exec "$@"
