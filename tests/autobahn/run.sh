#!/usr/bin/env bash
# RFC 6455 and RFC 7692 conformance: the Autobahn|Testsuite fuzzing client (cases 1-13; 12 and
# 13 are permessage-deflate, on by default in the binary) against `corecast --mode echo`,
# compared with tests/autobahn/expected.json.
#
#   tests/autobahn/run.sh              run, fail on a non-passing case or a change from expected
#   UPDATE_EXPECTED=1 tests/autobahn/run.sh    run and rewrite expected.json
#
# autobahntestsuite is Python 2 only: python2.7 comes from Debian bullseye (pinned at low
# priority, so nothing else is taken from it) and its packages install into target/autobahn.
# Loopback only; bounded by timeouts.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
work=$root/target/autobahn
mkdir -p "$work"

# Debian's interpreter, called by its path: a `python2.7` found on PATH may be a version
# manager's shim that names an interpreter without one behind it.
py2=/usr/bin/python2.7
if ! "$py2" -c pass 2>/dev/null; then
  echo "autobahn: installing python2.7 from Debian bullseye"
  echo "deb http://deb.debian.org/debian bullseye main" >/etc/apt/sources.list.d/bullseye-python2.list
  printf 'Package: *\nPin: release n=bullseye\nPin-Priority: 100\n' >/etc/apt/preferences.d/bullseye-python2
  apt-get update -qq
  apt-get install -y -qq -t bullseye python2.7 libpython2.7-dev >/dev/null
  "$py2" -c pass || { echo "autobahn: $py2 does not run after installing it"; exit 1; }
fi
for tool in python3 cargo; do
  command -v "$tool" >/dev/null && "$tool" --version >/dev/null 2>&1 \
    || { echo "autobahn: $tool is missing or does not run"; exit 1; }
done

site=$work/site
if [ ! -f "$site/.complete" ]; then
  echo "autobahn: installing autobahntestsuite for python2.7"
  rm -rf "$work/wheels" "$work/pip2" "$site"
  # pip for Python 2, fetched with the Python 3 pip.
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 2.7 \
    --implementation cp --abi cp27mu --platform manylinux1_x86_64 --platform any \
    -d "$work/wheels" pip==20.3.4 setuptools==44.1.1 wheel==0.37.1
  "$py2" "$work/wheels/pip-20.3.4-py2.py3-none-any.whl/pip" install -q --no-index \
    --find-links "$work/wheels" --target "$work/pip2" pip setuptools wheel
  # The suite's package omits its requirements: these pins are its requirements.txt.
  PYTHONPATH=$work/pip2 "$py2" -m pip install -q --no-warn-script-location \
    --target "$site" -r tests/autobahn/requirements-py2.txt 2>&1 | grep -v DEPRECATION || true
  PYTHONPATH=$work/pip2 "$py2" -m pip install -q --no-deps --target "$site" \
    autobahntestsuite==25.10.1 2>&1 | grep -v -e DEPRECATION -e 'already exists' || true
  touch "$site/.complete"
fi

# wsaccel: the suite's masking and UTF-8 checks in C. Without it the client masks every byte in
# Python, and cases 12-13 (1,000 messages of up to 128 KiB each) take well over an hour.
if ! PYTHONPATH=$site "$py2" -c 'import wsaccel.xormask, wsaccel.utf8validator' 2>/dev/null; then
  echo "autobahn: building wsaccel for python2.7"
  [ -f /usr/include/python2.7/Python.h ] || apt-get install -y -qq libpython2.7-dev >/dev/null
  rm -rf "$work/wsaccel"
  python3 -m pip download -q --no-deps --no-binary=:all: -d "$work/wsaccel" wsaccel==0.6.6
  tar xzf "$work/wsaccel/wsaccel-0.6.6.tar.gz" -C "$work/wsaccel"
  # Its C sources are in the release: setup.py builds them without Cython.
  (cd "$work/wsaccel/wsaccel-0.6.6" && PYTHONPATH=$work/pip2 "$py2" setup.py -q build_ext --inplace)
  cp -r "$work/wsaccel/wsaccel-0.6.6/wsaccel" "$site/"
  PYTHONPATH=$site "$py2" -c 'import wsaccel.xormask, wsaccel.utf8validator' \
    || { echo "autobahn: wsaccel does not import after building it"; exit 1; }
fi

cargo build --release --quiet -p corecast-bin
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# Messages up to 16 MiB (cases 9.x); no unsolicited pings while a case runs; no inbound rate
# limit (cases 9.7 and 9.8 send a thousand messages as fast as they are echoed).
./target/release/corecast --mode echo --listen "127.0.0.1:$port" --api-listen off \
  --max-message-size 64MiB --ping-interval 60s --write-timeout 30s --client-message-rate 0 --client-byte-rate 0 2>"$work/server.log" &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  (echo >/dev/tcp/127.0.0.1/$port) 2>/dev/null && break
  sleep 0.1
done

reports=$work/reports
rm -rf "$reports"
cat >"$work/fuzzingclient.json" <<JSON
{
  "outdir": "$reports",
  "servers": [{"agent": "corecast", "url": "ws://127.0.0.1:$port/ws"}],
  "cases": ["1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "8.*", "9.*", "10.*", "11.*", "12.*", "13.*"],
  "exclude-cases": [],
  "exclude-agent-cases": {}
}
JSON
echo "autobahn: running cases 1-13 against corecast on 127.0.0.1:$port"
# zope is a namespace package: the install directory must be a site dir, not just on PYTHONPATH.
(cd "$work" && timeout 900 "$py2" -c "
import site, sys
site.addsitedir('$site')
sys.argv = ['wstest', '--mode', 'fuzzingclient', '--spec', '$work/fuzzingclient.json']
from autobahntestsuite import wstest
wstest.run()
" >"$work/wstest.log" 2>&1) || { tail -20 "$work/wstest.log"; echo "autobahn: wstest failed"; exit 1; }

kill $server 2>/dev/null || true
python3 tests/autobahn/check.py "$reports/index.json" tests/autobahn/expected.json
