//! Starts the real `hongbao` binary on 127.0.0.1:0 and talks HTTP/1.1 to it.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::deployment::{Backends, Deployment};

/// The campaign most tests use.
pub const TEST_CAMPAIGN: &str = include_str!("fixtures/test-campaign.yaml");

/// How long a server may take to start, including opening its stores and compiling its scenes'
/// plugins (each test's data directory starts with an empty compile cache): a minute, because a
/// machine loaded by a parallel build compiles several times slower.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running server with its own scene and data directories.
pub struct Server {
    child: Option<Child>,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// The scene directory it watches.
    pub scenes: PathBuf,
    /// Its data directory.
    pub data: PathBuf,
    /// The flags that select its deployment's backends, used again on every launch.
    pub backend_args: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Server {
    /// Starts a server on `TEST_CAMPAIGN` with extra `serve` flags.
    pub fn start(extra_args: &[&str]) -> Server {
        Server::start_on(&Deployment::Embedded.backends(), extra_args)
    }

    /// Starts a server on `TEST_CAMPAIGN` over `backends`, with extra `serve` flags.
    pub fn start_on(backends: &Backends, extra_args: &[&str]) -> Server {
        Server::start_with_on(backends, &[("test-campaign.yaml", TEST_CAMPAIGN)], None, extra_args)
    }

    /// Starts a server over `backends` whose scene directory holds `files`; `keys_from` copies
    /// another host's signing keys, as the hosts of one fleet share them.
    pub fn start_with_on(
        backends: &Backends,
        files: &[(&str, &str)],
        keys_from: Option<&Server>,
        extra_args: &[&str],
    ) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let scenes = dir.path().join("scenes");
        std::fs::create_dir_all(&scenes).unwrap();
        for (name, text) in files {
            std::fs::write(scenes.join(name), text).unwrap();
        }
        let data = dir.path().join("data");
        if let Some(other) = keys_from {
            copy_dir(&other.data.join("keys"), &data.join("keys"));
        }
        let mut server =
            Server { child: None, addr: String::new(), scenes, data, backend_args: backends.serve_args(), _dir: dir };
        server.launch(extra_args);
        server
    }

    /// Starts a server whose scene directory holds `files` (name, YAML text).
    pub fn start_with(files: &[(&str, &str)], extra_args: &[&str]) -> Server {
        let mut server = Server::unstarted(files);
        server.launch(extra_args);
        server
    }

    /// A server not started yet, whose scene directory holds `files` (name, YAML text).
    fn unstarted(files: &[(&str, &str)]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let scenes = dir.path().join("scenes");
        std::fs::create_dir_all(&scenes).unwrap();
        for (name, text) in files {
            std::fs::write(scenes.join(name), text).unwrap();
        }
        let data = dir.path().join("data");
        Server { child: None, addr: String::new(), scenes, data, backend_args: Vec::new(), _dir: dir }
    }

    /// [`Server::start_with`] with extra environment variables, returning as soon as the host
    /// listens: its plugins may still be compiling.
    pub fn start_listening(files: &[(&str, &str)], extra_args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut server = Server::unstarted(files);
        server.launch_listening(extra_args, env);
        server
    }

    /// Starts the process again on the same directories (after [`Server::kill9`]).
    pub fn launch(&mut self, extra_args: &[&str]) {
        self.launch_with_env(extra_args, &[]);
    }

    /// [`Server::launch`] with extra environment variables (such as `HONGBAO_FAILPOINTS`). Like
    /// every launch, it returns once the host listens and its scenes' plugins are compiled (they
    /// compile in the background while the host already serves).
    pub fn launch_with_env(&mut self, extra_args: &[&str], env: &[(&str, &str)]) {
        self.launch_listening(extra_args, env);
        self.wait_plugins_compiled();
    }

    /// Waits until no plugin the host serves is still compiling (or the host is gone: a test
    /// that armed a failpoint may see it abort at start).
    pub fn wait_plugins_compiled(&self) {
        wait_for(START_TIMEOUT, || match try_request(&self.addr, "GET", "/healthz", None) {
            Ok((200, health)) => (health["plugins_warming"] == 0).then_some(()),
            Ok(_) => None,
            Err(_) => Some(()),
        });
    }

    /// Starts the process on the same directories and returns as soon as it listens, its
    /// plugins perhaps still compiling.
    pub fn launch_listening(&mut self, extra_args: &[&str], env: &[(&str, &str)]) {
        install_test_credentials(&self.data);
        let mut child = Command::new(env!("CARGO_BIN_EXE_hongbao"))
            .args(["serve", "--listen", "127.0.0.1:0", "--scenes"])
            .arg(&self.scenes)
            .arg("--data")
            .arg(&self.data)
            .args(&self.backend_args)
            .args(extra_args)
            .env("HONGBAO_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting hongbao");
        let stdout = child.stdout.take().unwrap();
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = sender.send(line);
            }
            for _ in lines {}
        });
        let line = receiver.recv_timeout(START_TIMEOUT).expect("hongbao did not say where it listens");
        self.addr = line.rsplit("http://").next().unwrap().trim().to_owned();
        self.child = Some(child);
    }

    /// Waits until the process has exited on its own (a failpoint aborted it).
    pub fn wait_exited(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.wait().unwrap();
        }
    }

    /// Kills the process with SIGKILL: no shutdown code runs.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// `GET path`.
    pub fn get(&self, path: &str) -> (u16, Value) {
        request(&self.addr, "GET", path, None)
    }

    /// `POST path` with a JSON body.
    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        request(&self.addr, "POST", path, Some(body))
    }

    /// Grants in the `rain` scene of the test campaign.
    pub fn grant_rain(&self, act_id: i64, rain_id: i32, stage: u32) -> Value {
        let (status, body) = self.post("/v1/grants", &grant_body(act_id, "rain", rain_id, stage));
        assert_eq!(status, 200, "{body}");
        body
    }

    /// `GET /v1/wallets/{act_id}`.
    pub fn wallet(&self, act_id: i64) -> Value {
        let (status, body) = self.get(&format!("/v1/wallets/{act_id}"));
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Waits until the user's wallet has nothing pending, in a whole (not degraded) answer.
    pub fn wait_credited(&self, act_id: i64) -> Value {
        wait_for(Duration::from_secs(30), || {
            let wallet = self.wallet(act_id);
            (wallet["pending_cents"] == 0 && wallet.get("degraded").is_none()).then_some(wallet)
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Copies a directory's files (not recursive).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// A grant request body in the test campaign.
pub fn grant_body(act_id: i64, scene_id: &str, rain_id: i32, stage: u32) -> Value {
    let award_type = "cash";
    serde_json::json!({
        "app_id": 1128, "act_id": act_id, "activity_id": "test-campaign", "scene_id": scene_id,
        "rain_id": rain_id, "award_type": award_type, "stage": stage,
    })
}

/// Polls `probe` every 20 ms until it returns something, or panics after `timeout`.
pub fn wait_for<T>(timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(found) = probe() {
            return found;
        }
        assert!(Instant::now() < deadline, "condition not met within {timeout:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The apps every test server knows, each with one key `test-key` and the secret
/// [`test_secret`]: scoped to every activity, except [`SCOPED_APP`].
pub const TEST_APPS: [i64; 7] = [1, 9, 1128, 2329, 1319, 8663, SCOPED_APP];

/// An app scoped to the activity `elsewhere` only.
pub const SCOPED_APP: i64 = 4242;

/// The admin credential of every test server.
pub const TEST_ADMIN_TOKEN: &str = "hbadmin_test-admin-credential";

/// The secret of a test app's key `test-key`.
pub fn test_secret(app_id: i64) -> String {
    format!("hbsk_test_secret_of_{app_id}")
}

/// Writes the test apps' credentials and the admin credential into a data directory, as
/// `hongbao apps add` would (owner-only), unless it has them already. Every test server gets
/// the same ones, so a request is signed the same way whichever host it goes to.
fn install_test_credentials(data: &Path) {
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
    let keys = data.join("keys");
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&keys).unwrap();
    let owner_only = |path: PathBuf, text: &str| {
        if path.exists() {
            return;
        }
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).unwrap();
        file.write_all(text.as_bytes()).unwrap();
    };
    let apps: Vec<Value> = TEST_APPS
        .iter()
        .map(|app_id| {
            let activities = if *app_id == SCOPED_APP { vec!["elsewhere"] } else { vec!["*"] };
            serde_json::json!({
                "app_id": app_id, "name": format!("test app {app_id}"), "activities": activities,
                "keys": [{ "key_id": "test-key", "secret": test_secret(*app_id), "created_ms": 0 }],
            })
        })
        .collect();
    owner_only(keys.join("apps.json"), &serde_json::json!({ "apps": apps }).to_string());
    owner_only(keys.join("admin.token"), TEST_ADMIN_TOKEN);
}

/// How a test request authenticates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// As the route needs: nothing on public routes, the admin credential on admin routes,
    /// otherwise signed by the app the body names (1128 when it names none).
    Default,
    /// No `Authorization` header.
    None,
    /// Signed by this test app with its key `test-key`.
    App(i64),
    /// This `Authorization` header, as is.
    Header(String),
}

/// The `Authorization` header of a signed request, as a client builds it from the README.
pub fn signed_header(app_id: i64, key_id: &str, secret: &str, method: &str, path: &str, body: &[u8]) -> String {
    let timestamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let nonce: String = (0..24).map(|_| fastrand::alphanumeric()).collect();
    signed_header_at(app_id, key_id, secret, method, path, body, timestamp, &nonce)
}

/// [`signed_header`] at a given time with a given nonce.
#[allow(clippy::too_many_arguments)]
pub fn signed_header_at(
    app_id: i64,
    key_id: &str,
    secret: &str,
    method: &str,
    path: &str,
    body: &[u8],
    timestamp: u64,
    nonce: &str,
) -> String {
    use base64::Engine as _;
    use hmac::Mac as _;
    use sha2::Digest as _;
    let body_hash: String = sha2::Sha256::digest(body).iter().map(|b| format!("{b:02x}")).collect();
    let signed = format!("{method}\n{path}\n{timestamp}\n{nonce}\n{body_hash}\n");
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(signed.as_bytes());
    let signature = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!(
        "HONGBAO-HMAC-SHA256 app_id={app_id},key_id={key_id},timestamp={timestamp},nonce={nonce},signature={signature}"
    )
}

/// The header [`Auth::Default`] sends for a request.
fn default_authorization(method: &str, path: &str, body: Option<&Value>, payload: &str) -> Option<String> {
    let route = path.split('?').next().unwrap_or(path);
    if matches!(route, "/healthz" | "/v1/keys" | "/v1/tokens:verify") {
        return None;
    }
    let packet_refund =
        route.starts_with("/v1/packets/") && (route.ends_with("/refund") || route.ends_with("/reconciliation"));
    if matches!(route, "/v1/scenes" | "/v1/plugins" | "/v1/security" | "/metrics" | "/dashboard" | "/dashboard/data")
        || route.starts_with("/v1/activities/")
        || packet_refund
    {
        return Some(format!("Bearer {TEST_ADMIN_TOKEN}"));
    }
    let named = body.and_then(|body| body.get("app_id").or_else(|| body.pointer("/grants/0/app_id")));
    let app_id = named.and_then(Value::as_i64).filter(|id| TEST_APPS.contains(id)).unwrap_or(1128);
    Some(signed_header(app_id, "test-key", &test_secret(app_id), method, path, payload.as_bytes()))
}

/// One HTTP/1.1 request on a fresh connection, authenticated as the route needs; returns the
/// status and the JSON body.
pub fn request(addr: &str, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    try_request(addr, method, path, body).unwrap_or_else(|error| panic!("{method} {path} on {addr}: {error}"))
}

/// [`request`] that reports a server that is gone, or dies before answering, as an error.
pub fn try_request(addr: &str, method: &str, path: &str, body: Option<&Value>) -> std::io::Result<(u16, Value)> {
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    let authorization = default_authorization(method, path, body, &payload);
    raw_request(addr, method, path, &payload, "application/json", authorization.as_deref())
}

/// A request authenticated by `auth`, with this body text and content type.
pub fn request_as(
    addr: &str,
    auth: &Auth,
    method: &str,
    path: &str,
    payload: &str,
    content_type: &str,
) -> (u16, Value) {
    let authorization = match auth {
        Auth::Default => {
            let body: Option<Value> = serde_json::from_str(payload).ok();
            default_authorization(method, path, body.as_ref(), payload)
        }
        Auth::None => None,
        Auth::App(app_id) => {
            Some(signed_header(*app_id, "test-key", &test_secret(*app_id), method, path, payload.as_bytes()))
        }
        Auth::Header(header) => Some(header.clone()),
    };
    raw_request(addr, method, path, payload, content_type, authorization.as_deref())
        .unwrap_or_else(|error| panic!("{method} {path} on {addr}: {error}"))
}

/// One HTTP/1.1 request with exactly these parts.
pub fn raw_request(
    addr: &str,
    method: &str,
    path: &str,
    payload: &str,
    content_type: &str,
    authorization: Option<&str>,
) -> std::io::Result<(u16, Value)> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let authorization = authorization.map(|value| format!("authorization: {value}\r\n")).unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: {content_type}\r\n{authorization}content-length: {}\r\nconnection: close\r\n\r\n{payload}",
        payload.len()
    )?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let broken = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let text = String::from_utf8(response).map_err(|_| broken("response is not UTF-8"))?;
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| broken("no HTTP response"))?;
    let status = head.split(' ').nth(1).and_then(|code| code.parse().ok()).ok_or_else(|| broken("no status code"))?;
    let json =
        if body.is_empty() { Value::Null } else { serde_json::from_str(body).unwrap_or(Value::String(body.into())) };
    Ok((status, json))
}

/// Writes `text` to `path` through a rename, as editors do, so a reader never sees half a file.
pub fn write_atomically(path: &Path, text: &str) {
    let temporary = path.with_extension("tmp-edit");
    std::fs::write(&temporary, text).unwrap();
    std::fs::rename(&temporary, path).unwrap();
}

/// A plugin built by `just plugins` (`plugins/target/wasm32-wasip2/release/{name}.wasm`).
pub fn plugin_wasm(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../plugins/target/wasm32-wasip2/release")
        .join(format!("{name}.wasm"));
    assert!(path.is_file(), "{} is missing: build the plugins first with `just plugins`", path.display());
    path
}

/// A JavaScript or Python reference plugin built by `just polyglot`
/// (`plugins/target/{js,python}/{name}.wasm`).
pub fn polyglot_wasm(language: &str, name: &str) -> PathBuf {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/target").join(language).join(format!("{name}.wasm"));
    assert!(
        path.is_file(),
        "{} is missing: build the JavaScript and Python plugins with `just polyglot`",
        path.display()
    );
    path
}

/// The sha256 of a file, as the scene YAML pins it.
pub fn sha256_of(path: &Path) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(std::fs::read(path).unwrap());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// A `plugins:` entry for a scene: `capability` served by `wasm`, pinned to its current bytes.
pub fn plugin_block(capability: &str, wasm: &Path, on_failure: &str, extra: &str) -> String {
    format!(
        "                {capability}:\n                  path: {}\n                  sha256: {}\n                  on_failure: {on_failure}\n{extra}",
        wasm.display(),
        sha256_of(wasm)
    )
}
