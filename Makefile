# Warden PBX developer commands. Quick start: `make run`, `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
CONFIG ?= conf/config.yml
# Debian packages that building and running need (python3-venv/-dev for the
# venv and the Cython build), and those the tests drive as real peers.
APT_BUILD := python3-venv python3-dev gcc openssl
APT_TEST  := openssl sip-tester stunnel4 baresip sipvicious
# What the benchmarks compare against (bench/tls/flood.py: nginx serving the
# same certificate; its C load generator links libssl).
APT_BENCH := nginx libssl-dev
# Debian 12's own Python stack, for `make test-debian` (the .deb runs on it).
APT_DEBIAN_PY := python3-yaml python3-cryptography python3-flask gunicorn cython3 \
                 python3-setuptools python3-pytest python3-hypothesis

# Cython compiles the SIP wire modules too: those in warden/sip/_select.py COMPILED.
SOURCES := $(wildcard warden_ext/*.pyx warden_ext/*.pxd warden/sip/*.py) pyproject.toml setup.py
CHECK_COMPILED = -c "import importlib, warden.sip._select as s; [importlib.import_module(m).__file__.endswith('.so') or exit(m + ' not compiled') for m in ['warden_ext.g711', 'warden_ext.relay', 'warden_ext.mixer'] + ['warden.sip.' + n for n in s.COMPILED]]"

.PHONY: help venv certs run test test-debian check-ext bench clean distclean

help:
	@echo "make run          set up (venv, Cython build, dev certificates) and run the PBX"
	@echo "make test         set up and run the whole test suite"
	@echo "make test-debian  build with Debian 12's python3/cython3 and run the suite there"
	@echo "make bench        run the benchmarks in bench/"

$(VENV)/.installed: $(SOURCES)
	@tools/ensure-apt.sh $(APT_BUILD)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	$(PY) $(CHECK_COMPILED)
	touch $@

venv: $(VENV)/.installed

certs/server.crt: | $(VENV)/.installed
	$(VENV)/bin/warden-pbx cert generate --out-dir certs

certs: certs/server.crt

run: venv certs
	$(VENV)/bin/warden-pbx --config $(CONFIG) run

# The SIP wire unit tests run a second time on the pure-Python twins of the
# compiled SIP modules (the whole suite above runs the compiled ones).
SIP_UNIT_TESTS := tests/test_sip_uri.py tests/test_sip_message.py tests/test_sip_framing.py \
                  tests/test_sip_auth.py tests/test_sip_transaction.py tests/test_sip_dialog.py \
                  tests/test_sip_sdp.py tests/test_sip_stream.py tests/test_fuzz_sip.py

test: venv
	@tools/ensure-apt.sh $(APT_TEST)
	$(PY) -m pytest -q
	WARDEN_NO_EXTENSIONS=1 $(PY) -m pytest -q $(SIP_UNIT_TESTS)

# The same suite on Debian 12's interpreter and libraries (Cython 0.29 build),
# in a scratch copy so its extension does not replace the venv's.
test-debian:
	@tools/ensure-apt.sh $(APT_BUILD) $(APT_TEST) $(APT_DEBIAN_PY)
	rm -rf build/debian-py && mkdir -p build/debian-py
	cp -r warden warden_ext tests tools bench conf setup.py pyproject.toml README.md build/debian-py/
	rm -f build/debian-py/warden_ext/*.so build/debian-py/warden_ext/*.c build/debian-py/warden/sip/*.so build/debian-py/warden/sip/*.c  # rebuilt by Debian's Cython 0.29
	cd build/debian-py && env PATH=/usr/sbin:/usr/bin:/sbin:/bin /usr/bin/python3 setup.py -q build_ext --inplace
	cd build/debian-py && /usr/bin/python3 -c "import Cython; print('Cython', Cython.__version__)"
	cd build/debian-py && /usr/bin/python3 $(CHECK_COMPILED)
	# Debian has no sslyze: tests/test_tls_scan.py runs the dev venv's (skipped without one)
	cd build/debian-py && env PATH=/usr/sbin:/usr/bin:/sbin:/bin $(if $(wildcard $(PY)),WARDEN_SSLYZE_PYTHON=$(abspath $(PY))) /usr/bin/python3 -m pytest -q -p no:cacheprovider

bench: venv
	@tools/ensure-apt.sh $(APT_BENCH)
	$(PY) bench/bench_g711.py

clean:
	rm -rf build dist *.egg-info warden_ext/*.c warden_ext/*.so warden/sip/*.c warden/sip/*.so .pytest_cache
	find . -name __pycache__ -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) logs var

# The Debian package (debian/, systemd/): build the .deb with Debian's python3
# and cython3, check it with lintian, then install and exercise it in a booted
# Debian 12 systemd container (tools/deb_test.py; as root; the debootstrapped
# tree is cached in /var/cache/warden-deb-test). The build itself:
#   env PATH=/usr/sbin:/usr/bin:/sbin:/bin dpkg-buildpackage -us -uc -b
APT_DEB := build-essential dpkg-dev debhelper dh-python python3-all-dev python3-setuptools \
           cython3 lintian systemd-container debootstrap git
.PHONY: test-deb
test-deb:
	@tools/ensure-apt.sh $(APT_DEB)
	/usr/bin/python3 tools/deb_test.py
