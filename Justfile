# hongbao tasks. `just run` serves the example campaign; `just test` runs every test.

# Build output stays in each clone's own `target/`. A target directory shared between clones is
# unsafe here: the integration tests live outside the `host` package, so cargo fingerprints them by
# absolute path, and one clone's build could look up to date to another and run stale tests.

# Serve scenes/ on http://127.0.0.1:8080 with the embedded store in ./data.
# It reuses every dependency `just test` built (and the other way round): host/workspace-hack/ pins
# the features the two cargo commands would otherwise resolve differently.
# The first run writes a development credential for app 1128 (data/keys/apps.json); sign
# requests with it through `target/debug/hongbao call` (see the README's tour).
run *ARGS: plugins
    cargo run -q -p hongbao-host --bin hongbao -- apps add 1128 --activities '*' --name development --if-missing --data data
    @echo "signed requests: target/debug/hongbao call POST /v1/grants '{…}'   (README: A tour)"
    cargo run -p hongbao-host --bin hongbao -- serve --scenes scenes --data data {{ARGS}}

# Every test: unit tests, the scene validation cases, and the black-box suite against the real binary
# (the dashboard's in headless Chromium among them).
test: plugins polyglot _browser
    cargo test --workspace --no-fail-fast

# The dashboard test's browser: Debian's Chromium (installed with apt-get when missing) driven by
# playwright-core, installed from tests/browser/package-lock.json into target/browser-deps.
_browser:
    #!/usr/bin/env bash
    set -euo pipefail
    if [ ! -x "${CHROMIUM:-/usr/bin/chromium}" ]; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
        else
            echo "the dashboard test needs Debian's Chromium: sudo apt-get install chromium"; exit 1
        fi
    fi
    command -v npm >/dev/null || { echo "the dashboard test needs Node.js and npm: apt-get install nodejs npm"; exit 1; }
    deps=target/browser-deps
    if ! cmp -s tests/browser/package-lock.json "$deps/package-lock.json" || [ ! -d "$deps/node_modules/playwright-core" ]; then
        mkdir -p "$deps"
        cp tests/browser/package.json tests/browser/package-lock.json "$deps/"
        npm ci --prefix "$deps" --no-audit --no-fund --silent
    fi

# The API against its own OpenAPI document: schemathesis (PyPI, installed into
# target/schemathesis-venv) calls every operation of a live host serving the example campaign
# (whose names the document's examples use) EXAMPLES times per phase, each
# request signed as its operation's `security` says (tests/schemathesis/hooks.py), and fails on
# any server error and any answer the document does not describe (status, content type, body).
api-check EXAMPLES="20": plugins _schemathesis
    #!/usr/bin/env bash
    set -euo pipefail
    cargo build -q -p hongbao-host --bin hongbao
    dir=$(mktemp -d)
    pid=""
    trap 'if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; fi; rm -rf "$dir"' EXIT
    credential=$(target/debug/hongbao apps add 1128 --activities '*' --name schemathesis --data "$dir/data" 2>/dev/null)
    export HB_APP_ID=1128
    export HB_KEY_ID=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["key_id"])' "$credential")
    export HB_APP_SECRET=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["secret"])' "$credential")
    HONGBAO_LOG=error target/debug/hongbao serve --listen 127.0.0.1:0 --scenes scenes --data "$dir/data" > "$dir/serve.out" &
    pid=$!
    for _ in $(seq 600); do grep -q 'http://' "$dir/serve.out" 2>/dev/null && break; sleep 0.1; done
    addr=$(grep -o 'http://[0-9.:]*' "$dir/serve.out" | head -1)
    [ -n "$addr" ] || { echo "api-check: the host did not start"; exit 1; }
    export HB_ADMIN_TOKEN=$(cat "$dir/data/keys/admin.token")
    SCHEMATHESIS_HOOKS=tests/schemathesis/hooks.py target/schemathesis-venv/bin/st \
        --config-file tests/schemathesis/schemathesis.toml run "$addr/v1/openapi.json" \
        --max-examples {{EXAMPLES}} --workers 1 --phases examples,coverage,fuzzing \
        --exclude-checks use_after_free,ensure_resource_availability,object_level_authorization

_schemathesis:
    #!/usr/bin/env bash
    set -euo pipefail
    venv=target/schemathesis-venv
    if ! cmp -s tests/schemathesis/requirements.txt "$venv/requirements.txt"; then
        command -v python3 >/dev/null || { echo "api-check needs Python 3: apt-get install python3 python3-venv"; exit 1; }
        rm -rf "$venv"
        python3 -m venv "$venv" || { echo "api-check needs Python's venv module: apt-get install python3-venv"; exit 1; }
        "$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/schemathesis/requirements.txt
        cp tests/schemathesis/requirements.txt "$venv/requirements.txt"
    fi

# Check the example campaign.
validate: plugins
    cargo run -q -p hongbao-host --bin hongbao -- scenes validate scenes

# Clippy with warnings as errors, and formatting.
lint: _toolchain
    cargo clippy --workspace --all-targets -- -D warnings
    cargo fmt --all --check

# Needs the nightly toolchain. A crash's input lands in tests/fuzz/artifacts/TARGET/; new inputs
# go to a scratch directory, so tests/fuzz/corpus/ keeps only the committed seeds.
# Fuzz every decoder of outside bytes (tests/fuzz/fuzz_targets) for SECONDS each; fails on a crash.
fuzz SECONDS="60": _fuzz_tools
    #!/usr/bin/env bash
    set -euo pipefail
    cargo +nightly fuzz build --fuzz-dir tests/fuzz
    scratch=$(mktemp -d)
    trap 'rm -rf "$scratch"' EXIT
    failed=()
    for target in $(cargo +nightly fuzz list --fuzz-dir tests/fuzz); do
        echo "fuzz: $target for {{SECONDS}} s"
        mkdir -p "$scratch/$target"
        cargo +nightly fuzz run --fuzz-dir tests/fuzz "$target" "$scratch/$target" "tests/fuzz/corpus/$target" \
            -- -max_total_time={{SECONDS}} -print_final_stats=1 || failed+=("$target")
    done
    if [ ${#failed[@]} -gt 0 ]; then
        echo "fuzz: crashed: ${failed[*]} (inputs in tests/fuzz/artifacts/)"
        exit 1
    fi
    echo "fuzz: every target ran {{SECONDS}} s without a crash"

_fuzz_tools: _toolchain
    @rustup toolchain list | grep -q '^nightly' || { echo "cargo fuzz needs the nightly toolchain: rustup toolchain install nightly"; exit 1; }
    @command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked

# Benchmarks: micro-benchmarks of the hot paths (and the metrics crates' cost beside the host's
# own counters), the plugins by language, the host's instructions per grant under callgrind (a
# figure that repeats on a busy machine), the embedded memory per token by part (allocator
# bytes, which repeat too), then the rain suite (`hongbao bench suite`: hosts of its own, yardsticks, the
# synchronous design, the payment steward on a slowed ledger), which writes its figures into
# BENCHMARKS.md. The Redis + PostgreSQL runs use REDIS_URL and DATABASE_URL when set.
bench: plugins polyglot _valgrind
    cargo bench -p hongbao-host --bench embedded
    cargo bench -p hongbao-host --bench plugins
    cargo bench -p hongbao-host --bench grant_path
    cargo bench -p hongbao-host --bench metrics_cost
    cargo build --release -p hongbao-host --bin hongbao
    target/release/hongbao bench languages
    target/release/hongbao bench instructions
    target/release/hongbao bench footprint
    target/release/hongbao bench suite
    if [ -n "${DATABASE_URL:-}" ]; then target/release/hongbao bench shards --own-servers; else echo "bench shards skipped: set DATABASE_URL"; fi

# Build the server in release mode.
build: _toolchain
    cargo build --release -p hongbao-host --bin hongbao

# The reference plugins and test fixtures (plugins/), and the SDK's examples, as wasm32-wasip2
# components. The build is reproducible: the example campaign pins the reference plugins' sha256.
plugins: _wasm_target
    cd plugins && cargo build --release --locked
    cargo build --release --locked -p hongbao-sdk --examples --target wasm32-wasip2

# The JavaScript and Python reference plugins (plugins/js, plugins/python) as components, into
# plugins/target/{js,python}/. Their toolchains come from the registries into target/plugin-tools:
# componentize-js (npm, pinned in plugins/js/package-lock.json) and componentize-py (PyPI, pinned
# in plugins/python/requirements.txt). Neither builds reproducibly, so a plugin is rebuilt only
# when its sources are newer than it (and tests pin whatever was built).
polyglot:
    #!/usr/bin/env bash
    set -euo pipefail
    tools=target/plugin-tools
    mkdir -p "$tools" plugins/target/js plugins/target/python
    command -v npm >/dev/null || { echo "the JavaScript plugins need Node.js and npm: apt-get install nodejs npm"; exit 1; }
    command -v python3 >/dev/null || { echo "the Python plugins need Python 3: apt-get install python3 python3-venv"; exit 1; }
    export npm_config_cache="$PWD/$tools/npm-cache"
    if ! cmp -s plugins/js/package-lock.json "$tools/js/package-lock.json" || [ ! -x "$tools/js/node_modules/.bin/componentize-js" ]; then
        mkdir -p "$tools/js"
        cp plugins/js/package.json plugins/js/package-lock.json "$tools/js/"
        npm ci --prefix "$tools/js" --no-audit --no-fund --loglevel=error
    fi
    if ! cmp -s plugins/python/requirements.txt "$tools/python/requirements.txt" || [ ! -x "$tools/python/venv/bin/componentize-py" ]; then
        rm -rf "$tools/python"
        mkdir -p "$tools/python"
        python3 -m venv "$tools/python/venv" || { echo "the Python plugins need Python's venv module: apt-get install python3-venv"; exit 1; }
        "$tools/python/venv/bin/pip" install --quiet --disable-pip-version-check -r plugins/python/requirements.txt
        cp plugins/python/requirements.txt "$tools/python/requirements.txt"
    fi
    # A plugin is stale when it is missing or any of its sources is newer.
    stale() { out=$1; shift; [ ! -f "$out" ] || [ -n "$(find "$@" sdk/wit -newer "$out" -type f | head -1)" ]; }
    # componentize-js reads only the entry's own folder: the reference plugins are built next to
    # a copy of the SDK's helpers (sdk/js/common.js). Python takes both folders on its path.
    stage="$tools/js-src"
    rm -rf "$stage" && mkdir -p "$stage" && cp plugins/js/src/*.js sdk/js/common.js "$stage/"
    # Exactly http and fetch-event are disabled: both import wasi:http, which the host does not
    # link. The host provides stdio, clocks and random sealed (per-call time and seed). The
    # scaffolds build the same way (sdk/template/js/package.json.tmpl, python/build.sh.tmpl).
    for plugin in bill-copy inventory; do
        out="plugins/target/js/$plugin.wasm"
        if stale "$out" plugins/js/src sdk/js/common.js; then
            "$tools/js/node_modules/.bin/componentize-js" "$stage/$plugin.js" --wit sdk/wit \
                --world-name "$plugin-plugin" -d http -d fetch-event -o "$out"
        fi
        out="plugins/target/python/$plugin.wasm"
        if stale "$out" plugins/python/src sdk/python; then
            "$tools/python/venv/bin/componentize-py" -q -d sdk/wit -w "$plugin-plugin" componentize \
                -p plugins/python/src -p sdk/python "${plugin//-/_}_app" -o "$out"
        fi
    done

# valgrind, for `hongbao bench instructions` (callgrind): from apt-get when missing.
_valgrind:
    #!/usr/bin/env bash
    set -euo pipefail
    command -v callgrind_control >/dev/null && exit 0
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null
    else
        echo "the instruction count needs valgrind: sudo apt-get install valgrind"; exit 1
    fi

_wasm_target: _toolchain
    @rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2 || { echo "install the wasm32-wasip2 target: rustup target add wasm32-wasip2"; exit 1; }

_toolchain:
    @command -v cargo >/dev/null || { echo "install Rust first: https://rustup.rs (cargo is missing)"; exit 1; }
