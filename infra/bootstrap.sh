#!/usr/bin/env bash
# Set carelake up on a fresh machine, then run the main job or the tests.
#
#   bash infra/bootstrap.sh run [SOURCE ...]   install, then `carelake run` (default: the sample)
#   bash infra/bootstrap.sh test [PYTEST ARGS]  install, then the test suite
#
# The virtual environment lives outside the clone, keyed by the lock file's hash
# (~/.cache/carelake/venv-<hash>, or CARELAKE_VENV), so a second clone or a CI run reuses it.
# `.venv` in the clone links to it.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-run}
shift || true

lock_hash=$(sha256sum requirements.lock | cut -c1-16)
venv=${CARELAKE_VENV:-$HOME/.cache/carelake/venv-$lock_hash}
python=${PYTHON:-python3.11}
command -v "$python" >/dev/null || python=python3

if [ ! -f "$venv/.carelake-complete" ]; then
  echo "carelake: creating the virtual environment in $venv (about 3 minutes, once)"
  rm -rf "$venv"
  "$python" -m venv "$venv"
  # (this machine's pip configuration names local package folders that may be absent: pip warns
  # once per package about each; those lines are dropped, every other message is kept)
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r requirements.lock \
    2> >(grep -v "^WARNING: Location 'file:" >&2)
  touch "$venv/.carelake-complete"
fi
need_apt=()
# The ingest's compiled pass (dlt_pipelines/fhir/_scan.c) needs a C compiler and OpenSSL's headers.
command -v gcc >/dev/null && [ ! -e /usr/include/openssl/sha.h ] && need_apt+=(libssl-dev)
if [ "$mode" = test ]; then
  [ -e /usr/lib/softhsm/libsofthsm2.so ] || need_apt+=(softhsm2)
  command -v chromium >/dev/null || need_apt+=(chromium)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "carelake: installing Debian packages: ${need_apt[*]}"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  else
    echo "carelake: missing Debian packages ${need_apt[*]}: the ingest's compiled pass (without" \
         "libssl-dev) or their tests will be skipped" >&2
  fi
fi

"$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e . \
  2> >(grep -v "^WARNING: Location 'file:" >&2)
ln -sfn "$venv" .venv

case "$mode" in
  run) exec .venv/bin/carelake run "$@" ;;
  test) exec .venv/bin/python -m pytest "$@" ;;
  *) echo "usage: bash infra/bootstrap.sh run|test [ARGS]" >&2; exit 2 ;;
esac
