//! A small W3C WebDriver client of our own (plain JSON over HTTP with reqwest) driving Debian's headless Chromium
//! through ChromeDriver. It is a test harness: every WebDriver error panics with the command, its selector, the
//! page's URL and ChromeDriver's message, so a failing test reads as what the browser could not do.
//!
//! Each `Browser` is a ChromeDriver of its own on a port it picked, with a Chromium whose profile, home and crash
//! database live in a fresh temporary directory, so any number of tests and test processes run side by side.

use std::fmt::Display;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The key under which W3C WebDriver passes an element reference.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// How often the `wait_*` methods look at the page again.
const POLL_EVERY: Duration = Duration::from_millis(50);

/// How long ChromeDriver may take to say it listens: a bound on a hung start, not a wait (its line ends it).
const DRIVER_START_LIMIT: Duration = Duration::from_secs(30);

/// How long `accept_alert` and `dismiss_alert` wait for a dialog that page script opens a little later.
const ALERT_WAIT: Duration = Duration::from_secs(5);

/// The viewport every browser starts with.
pub const DESKTOP: (u32, u32) = (1280, 900);

/// A phone-sized viewport, for `set_window_size`.
pub const PHONE: (u32, u32) = (390, 844);

/// Chromium's switches. The automation defaults ChromeDriver adds come on top; these keep a test run quiet and
/// hermetic: no sandbox (CI runs as root in a container), no GPU, no calls home (updates, sync, QUIC probes), and
/// shared memory in the temporary directory instead of a possibly small `/dev/shm`.
const CHROMIUM_ARGS: &[&str] = &[
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
    "--disable-dev-shm-usage",
];

/// A headless Chromium driven over WebDriver. Dropping it ends the session (ChromeDriver quits Chromium) and
/// kills ChromeDriver.
#[derive(Debug)]
pub struct Browser {
    http: reqwest::Client,
    /// ChromeDriver's port on 127.0.0.1.
    port: u16,
    session_id: String,
    /// `http://127.0.0.1:{port}/session/{id}`, the prefix of every command.
    session: String,
    driver: Child,
    /// Chromium's profile, home and crash database; ChromeDriver's stderr. Removed once Chromium has quit: the
    /// fields drop after `Drop::drop` ends the session.
    _scratch: tempfile::TempDir,
}

/// One element of the page, found by `selector` (kept for error messages).
#[derive(Debug)]
pub struct Element<'b> {
    browser: &'b Browser,
    id: String,
    selector: String,
}

/// A cookie of the current page, as the browser keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cookie {
    pub name: String,
    pub value: String,
    pub path: Option<String>,
    pub http_only: bool,
    pub secure: bool,
    /// `Strict`, `Lax` or `None`, as the browser reports it (absent when it does not say).
    pub same_site: Option<String>,
}

/// A line of the browser's console (`console.*`, failed loads, CSP violations).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// `SEVERE`, `WARNING`, `INFO`, `DEBUG`.
    pub level: String,
    /// `console-api`, `network`, `security`, `javascript`, ...
    pub source: String,
    pub message: String,
}

/// An error ChromeDriver answered, or the failure to reach it.
#[derive(Debug)]
struct WebDriverError {
    /// The W3C error code (`no such element`, `stale element reference`, ...), or `transport` when ChromeDriver
    /// did not answer.
    error: String,
    message: String,
}

impl Display for WebDriverError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.error, self.message)
    }
}

/// What `wait_until_text` waits for in an element's text.
pub trait TextCondition {
    fn holds(&self, text: &str) -> bool;
    fn describe(&self) -> String;
}

/// A substring.
impl TextCondition for &str {
    fn holds(&self, text: &str) -> bool {
        text.contains(*self)
    }

    fn describe(&self) -> String {
        format!("text containing {self:?}")
    }
}

/// Any predicate on the text.
impl<F: Fn(&str) -> bool> TextCondition for F {
    fn holds(&self, text: &str) -> bool {
        self(text)
    }

    fn describe(&self) -> String {
        "text meeting the test's condition".to_owned()
    }
}

/// Where a test's screenshot `name` goes: `target/console-screenshots/` in the workspace, whatever
/// `CARGO_TARGET_DIR` says, so a person (or CI's artifacts) finds them in one place.
pub fn screenshot_path(name: &str) -> PathBuf {
    let server_crate = Path::new(env!("CARGO_MANIFEST_DIR"));
    let workspace = server_crate.parent().and_then(Path::parent).expect("crates/server sits two levels down");
    workspace.join("target/console-screenshots").join(name)
}

/// `name` on `PATH`, or `fallback` if that is an executable file.
fn find_program(name: &str, fallback: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .chain(std::iter::once(PathBuf::from(fallback)))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// The name of the running test (libtest names each test's thread after it), for the skip message.
fn test_name() -> String {
    std::thread::current().name().unwrap_or("a browser test").to_owned()
}

impl Browser {
    /// A new headless Chromium at the desktop viewport, or `None` (after saying so past the test harness's
    /// capture) when Chromium or ChromeDriver is not installed. Under CI (`CI` set) a missing browser is a broken
    /// install step, so it fails instead.
    pub async fn start() -> Option<Browser> {
        let driver = find_program("chromedriver", "/usr/bin/chromedriver");
        // Debian's `/usr/bin/chromium` is a launcher script that adds the distribution's flags, then execs
        // `/usr/lib/chromium/chromium`, so the process ChromeDriver watches is Chromium itself.
        let chromium = Some(PathBuf::from("/usr/bin/chromium"))
            .filter(|path| is_executable(path))
            .or_else(|| find_program("chromium", "/usr/bin/chromium"));
        let (Some(driver), Some(chromium)) = (driver, chromium) else {
            assert!(std::env::var_os("CI").is_none(), "CI must install chromium and chromium-driver (see .ci/run)");
            let _ = writeln!(
                std::io::stderr(),
                "console: {} skipped: Chromium/ChromeDriver are not installed \
                 (apt-get install chromium chromium-driver; .ci/run installs them)",
                test_name()
            );
            return None;
        };
        Some(Browser::launch(&driver, &chromium).await)
    }

    async fn launch(driver_path: &Path, chromium: &Path) -> Browser {
        let scratch = tempfile::Builder::new().prefix("tessera-browser-").tempdir().expect("temporary directory");
        let home = scratch.path().join("home");
        std::fs::create_dir_all(&home).expect("a home for Chromium");
        let stderr_path = scratch.path().join("chromedriver.log");
        let stderr = std::fs::File::create(&stderr_path).expect("ChromeDriver's log file");
        let mut driver = Command::new(driver_path)
            // Port 0: ChromeDriver binds a free port itself and names it on stdout, so parallel runs never
            // collide and nobody guesses a port that another process might take first.
            .arg("--port=0")
            // Chromium writes outside its profile too (the crash database under ~/.config/chromium, dconf under
            // ~/.cache): a home of its own keeps every run separate and the machine's home untouched.
            .env("HOME", &home)
            .env("XDG_CONFIG_HOME", home.join(".config"))
            .env("XDG_CACHE_HOME", home.join(".cache"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            // ChromeDriver's and Chromium's diagnostics would otherwise land in the test output, uncaptured.
            .stderr(Stdio::from(stderr))
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|error| panic!("{} does not start: {error}", driver_path.display()));
        let mut lines = BufReader::new(driver.stdout.take().expect("piped stdout")).lines();
        // Ready means "ChromeDriver was started successfully on port N.": read up to that line, never sleep.
        let started = tokio::time::timeout(DRIVER_START_LIMIT, async {
            let mut seen = String::new();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(port) = line
                    .split_once("started successfully on port ")
                    .and_then(|(_, rest)| rest.trim_end_matches('.').trim().parse::<u16>().ok())
                {
                    return Ok(port);
                }
                seen.push_str(&line);
                seen.push('\n');
            }
            Err(seen)
        })
        .await;
        let port = match started {
            Ok(Ok(port)) => port,
            Ok(Err(seen)) => panic!(
                "chromedriver ended before it listened:\n{seen}{}",
                std::fs::read_to_string(&stderr_path).unwrap_or_default()
            ),
            Err(_) => panic!("chromedriver did not report its port within {DRIVER_START_LIMIT:?}"),
        };
        // Keep reading what ChromeDriver prints later, so a full pipe never blocks it.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

        let http = reqwest::Client::builder()
            // ChromeDriver is on loopback: an HTTP(S)_PROXY in the environment must not reroute it.
            .no_proxy()
            // A bound on a hung ChromeDriver, well above any command's time (page loads are bounded at 30 s).
            .timeout(Duration::from_secs(60))
            .build()
            .expect("an HTTP client");
        let profile = scratch.path().join("profile");
        let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|arg| (*arg).to_owned()).collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        args.push(format!("--window-size={},{}", DESKTOP.0, DESKTOP.1));
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args},
            // The browser's console, for `console_logs` (CSP violations, script errors, failed loads).
            "goog:loggingPrefs": {"browser": "ALL"},
            // ChromeDriver's page-load default is 300 s; a console page that takes 30 s is a failure anyway.
            "timeouts": {"implicit": 0, "pageLoad": 30_000, "script": 10_000},
        }}});
        let driver_url = format!("http://127.0.0.1:{port}");
        let answer = request(&http, Method::POST, &format!("{driver_url}/session"), Some(capabilities))
            .await
            .unwrap_or_else(|error| {
                panic!(
                    "new session (Chromium {}): {error}\n{}",
                    chromium.display(),
                    std::fs::read_to_string(&stderr_path).unwrap_or_default()
                )
            });
        let session_id = answer["sessionId"].as_str().expect("a session id").to_owned();
        let browser = Browser {
            http,
            port,
            session: format!("{driver_url}/session/{session_id}"),
            session_id,
            driver,
            _scratch: scratch,
        };
        browser.set_window_size(DESKTOP.0, DESKTOP.1).await;
        browser
    }

    /// A command of this session (`path` after `/session/{id}`), or the error ChromeDriver answered.
    async fn try_command(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value, WebDriverError> {
        request(&self.http, method, &format!("{}{path}", self.session), body).await
    }

    /// A command that must succeed; `what` names it (and its selector) in the panic otherwise.
    async fn command(&self, method: Method, path: &str, body: Option<Value>, what: impl Display) -> Value {
        match self.try_command(method, path, body).await {
            Ok(value) => value,
            Err(error) => self.fail(what, error).await,
        }
    }

    /// Panics with the command, the page it was on and ChromeDriver's message.
    async fn fail(&self, what: impl Display, error: impl Display) -> ! {
        panic!("{}", self.failure(what, error).await)
    }

    /// The message `fail` panics with.
    async fn failure(&self, what: impl Display, error: impl Display) -> String {
        let page = match self.try_command(Method::GET, "/url", None).await {
            // A `data:` URL can be long; its start is enough to know the page.
            Ok(Value::String(url)) if url.chars().count() > 100 => {
                format!("{}…", url.chars().take(100).collect::<String>())
            }
            Ok(Value::String(url)) => url,
            // An open dialog, say, blocks even this.
            _ => "(the page's URL is unavailable)".to_owned(),
        };
        format!("WebDriver {what} on {page}: {error}")
    }

    /// Opens `url` and waits for it to load (the document's load event).
    pub async fn goto(&self, url: &str) {
        self.command(Method::POST, "/url", Some(json!({"url": url})), format_args!("goto({url:?})")).await;
    }

    pub async fn current_url(&self) -> String {
        string(self.command(Method::GET, "/url", None, "current_url()").await)
    }

    pub async fn title(&self) -> String {
        string(self.command(Method::GET, "/title", None, "title()").await)
    }

    /// The document as the browser now has it (after script), serialized.
    pub async fn page_source(&self) -> String {
        string(self.command(Method::GET, "/source", None, "page_source()").await)
    }

    pub async fn back(&self) {
        self.command(Method::POST, "/back", Some(json!({})), "back()").await;
    }

    pub async fn refresh(&self) {
        self.command(Method::POST, "/refresh", Some(json!({})), "refresh()").await;
    }

    /// The first element matching `css`; panics if there is none (see `wait_for` for one that is coming).
    pub async fn find(&self, css: &str) -> Element<'_> {
        let what = format!("find({css:?})");
        let found = self.command(Method::POST, "/element", Some(by_css(css)), &what).await;
        self.element(found, css.to_owned(), &what).await
    }

    /// Every element matching `css`, in document order (none is not an error).
    pub async fn find_all(&self, css: &str) -> Vec<Element<'_>> {
        let what = format!("find_all({css:?})");
        let found = self.command(Method::POST, "/elements", Some(by_css(css)), &what).await;
        self.elements(found, css, &what).await
    }

    /// The first element matching `css`, waiting up to `timeout` for it to be in the document.
    pub async fn wait_for(&self, css: &str, timeout: Duration) -> Element<'_> {
        match self.try_wait_for(css, timeout).await {
            Ok(element) => element,
            Err(message) => panic!("{message}"),
        }
    }

    /// As `wait_for`, answering the message instead of panicking with it when no element came.
    pub async fn try_wait_for(&self, css: &str, timeout: Duration) -> Result<Element<'_>, String> {
        let started = Instant::now();
        loop {
            if let Some(element) = self.find_all(css).await.into_iter().next() {
                return Ok(element);
            }
            if started.elapsed() >= timeout {
                let what = format!("wait_for({css:?})");
                return Err(self.failure(what, format_args!("no element matched within {timeout:?}")).await);
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }

    /// The first element matching `css` once its text meets `condition` (a substring, or a predicate), waiting up
    /// to `timeout`; the panic says the last text seen.
    pub async fn wait_until_text(&self, css: &str, condition: impl TextCondition, timeout: Duration) -> Element<'_> {
        let started = Instant::now();
        let mut last_text = None;
        loop {
            if let Some(element) = self.find_all(css).await.into_iter().next() {
                // The page may replace the element between the two commands: look again then.
                if let Ok(Value::String(text)) =
                    self.try_command(Method::GET, &format!("/element/{}/text", element.id), None).await
                {
                    if condition.holds(&text) {
                        return element;
                    }
                    last_text = Some(text);
                }
            }
            if started.elapsed() >= timeout {
                let seen = match &last_text {
                    Some(text) => format!("its text was {text:?}"),
                    None => "no element matched".to_owned(),
                };
                self.fail(
                    format_args!("wait_until_text({css:?}, {})", condition.describe()),
                    format_args!("not within {timeout:?}: {seen}"),
                )
                .await
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }

    /// Runs `script` as a function body in the page (`arguments[i]` are `args`; `Element::as_arg` passes an
    /// element) and answers what it returns.
    pub async fn execute(&self, script: &str, args: &[Value]) -> Value {
        let body = json!({"script": script, "args": args});
        let brief: String = script.chars().take(80).collect();
        self.command(Method::POST, "/execute/sync", Some(body), format_args!("execute({brief:?})")).await
    }

    /// A PNG of the viewport, written to `path` (its directories created; see `screenshot_path`).
    pub async fn screenshot(&self, path: impl AsRef<Path>) {
        let path = path.as_ref();
        let encoded = string(self.command(Method::GET, "/screenshot", None, "screenshot()").await);
        let png = base64::engine::general_purpose::STANDARD.decode(encoded).expect("the screenshot is base64");
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap_or_else(|error| panic!("creating {}: {error}", parent.display()));
        }
        // Written aside, then renamed over: two test runs shooting the same page never leave (or read) a torn file.
        static SHOTS: AtomicU64 = AtomicU64::new(0);
        let shot = SHOTS.fetch_add(1, Ordering::Relaxed);
        let aside = path.with_extension(format!("{}-{shot}.partial", std::process::id()));
        std::fs::write(&aside, png).unwrap_or_else(|error| panic!("writing {}: {error}", aside.display()));
        std::fs::rename(&aside, path).unwrap_or_else(|error| panic!("writing {}: {error}", path.display()));
    }

    /// Sizes the window so that the page's viewport (`innerWidth` × `innerHeight`, and so a screenshot) is
    /// `width` × `height`: headless Chromium counts pretend browser chrome in the window (143 px of height here),
    /// so the window is sized, measured, and sized again by the difference.
    pub async fn set_window_size(&self, width: u32, height: u32) {
        let what = format!("set_window_size({width}, {height})");
        let rect = |w: i64, h: i64| json!({"width": w, "height": h});
        let (width, height) = (i64::from(width), i64::from(height));
        self.command(Method::POST, "/window/rect", Some(rect(width, height)), &what).await;
        let viewport = self.execute("return [window.innerWidth, window.innerHeight]", &[]).await;
        let (inner_width, inner_height) =
            (viewport[0].as_i64().unwrap_or(width), viewport[1].as_i64().unwrap_or(height));
        if (inner_width, inner_height) != (width, height) {
            let outer = rect(2 * width - inner_width, 2 * height - inner_height);
            self.command(Method::POST, "/window/rect", Some(outer), &what).await;
        }
    }

    /// Asks pages for the dark palette (`prefers-color-scheme: dark`) or the light one, through ChromeDriver's
    /// DevTools passthrough (WebDriver itself has no command for it).
    pub async fn prefer_dark(&self, dark: bool) {
        let scheme = if dark { "dark" } else { "light" };
        let body = json!({
            "cmd": "Emulation.setEmulatedMedia",
            "params": {"features": [{"name": "prefers-color-scheme", "value": scheme}]},
        });
        self.command(Method::POST, "/goog/cdp/execute", Some(body), &format!("prefer_dark({dark})")).await;
    }

    /// The cookies the browser would send to the current page, with their flags.
    pub async fn cookies(&self) -> Vec<Cookie> {
        let all = self.command(Method::GET, "/cookie", None, "cookies()").await;
        let all = all.as_array().cloned().unwrap_or_default();
        all.iter()
            .map(|cookie| Cookie {
                name: cookie["name"].as_str().unwrap_or_default().to_owned(),
                value: cookie["value"].as_str().unwrap_or_default().to_owned(),
                path: cookie["path"].as_str().map(str::to_owned),
                http_only: cookie["httpOnly"].as_bool().unwrap_or(false),
                secure: cookie["secure"].as_bool().unwrap_or(false),
                same_site: cookie["sameSite"].as_str().map(str::to_owned),
            })
            .collect()
    }

    /// The cookie called `name`, if the current page has one.
    pub async fn cookie(&self, name: &str) -> Option<Cookie> {
        self.cookies().await.into_iter().find(|cookie| cookie.name == name)
    }

    /// Accepts the open `alert`/`confirm`/`prompt` (waiting a little for one that script opens late) and answers
    /// its text.
    pub async fn accept_alert(&self) -> String {
        self.answer_alert("/alert/accept", "accept_alert()").await
    }

    /// Dismisses the open dialog (Cancel), as `accept_alert` accepts it.
    pub async fn dismiss_alert(&self) -> String {
        self.answer_alert("/alert/dismiss", "dismiss_alert()").await
    }

    async fn answer_alert(&self, path: &str, what: &str) -> String {
        let started = Instant::now();
        let text = loop {
            match self.try_command(Method::GET, "/alert/text", None).await {
                Ok(text) => break string(text),
                Err(error) if error.error == "no such alert" && started.elapsed() < ALERT_WAIT => {
                    tokio::time::sleep(POLL_EVERY).await;
                }
                Err(error) => panic!("WebDriver {what}: {error}"),
            }
        };
        if let Err(error) = self.try_command(Method::POST, path, Some(json!({}))).await {
            panic!("WebDriver {what} (dialog {text:?}): {error}")
        }
        text
    }

    /// The browser console's lines since the last call (ChromeDriver hands each line out once).
    pub async fn console_logs(&self) -> Vec<LogEntry> {
        let lines = self.command(Method::POST, "/se/log", Some(json!({"type": "browser"})), "console_logs()").await;
        lines
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|line| LogEntry {
                level: line["level"].as_str().unwrap_or_default().to_owned(),
                source: line["source"].as_str().unwrap_or_default().to_owned(),
                message: line["message"].as_str().unwrap_or_default().to_owned(),
            })
            .collect()
    }

    async fn element(&self, found: Value, selector: String, what: &str) -> Element<'_> {
        match found[ELEMENT_KEY].as_str() {
            Some(id) => Element { browser: self, id: id.to_owned(), selector },
            None => self.fail(what, format_args!("not an element reference: {found}")).await,
        }
    }

    async fn elements(&self, found: Value, selector: &str, what: &str) -> Vec<Element<'_>> {
        let mut elements = Vec::new();
        for reference in found.as_array().cloned().unwrap_or_default() {
            elements.push(self.element(reference, selector.to_owned(), what).await);
        }
        elements
    }
}

impl Drop for Browser {
    /// Ends the session, which makes ChromeDriver quit Chromium and wait for it: killing ChromeDriver alone leaves
    /// Chromium running, adopted by init. Drop cannot await, so this is a blocking HTTP request of a few lines.
    fn drop(&mut self) {
        let ended = blocking_request(self.port, "DELETE", &format!("/session/{}", self.session_id));
        if !ended {
            // ChromeDriver's own shutdown quits every browser it started (only ours).
            blocking_request(self.port, "GET", "/shutdown");
        }
        let _ = self.driver.start_kill();
    }
}

impl<'b> Element<'b> {
    fn path(&self, rest: &str) -> String {
        format!("/element/{}{rest}", self.id)
    }

    async fn command(&self, method: Method, rest: &str, body: Option<Value>, what: &str) -> Value {
        let what = format!("{what} on {:?}", self.selector);
        self.browser.command(method, &self.path(rest), body, what).await
    }

    /// Clicks the element's centre (scrolling it into view), as a user would; panics if something covers it.
    pub async fn click(&self) {
        self.command(Method::POST, "/click", Some(json!({})), "click()").await;
    }

    /// Types `text` into the element (after what it holds).
    pub async fn send_keys(&self, text: &str) {
        self.command(Method::POST, "/value", Some(json!({"text": text})), "send_keys()").await;
    }

    pub async fn clear(&self) {
        self.command(Method::POST, "/clear", Some(json!({})), "clear()").await;
    }

    /// The text as rendered (hidden parts left out).
    pub async fn text(&self) -> String {
        string(self.command(Method::GET, "/text", None, "text()").await)
    }

    /// The attribute `name` as written in the HTML, if present.
    pub async fn attribute(&self, name: &str) -> Option<String> {
        let value =
            self.command(Method::GET, &format!("/attribute/{name}"), None, &format!("attribute({name:?})")).await;
        value.as_str().map(str::to_owned)
    }

    /// The DOM property `name` (`value`, `checked`, ...), as JSON.
    pub async fn property(&self, name: &str) -> Value {
        self.command(Method::GET, &format!("/property/{name}"), None, &format!("property({name:?})")).await
    }

    pub async fn is_displayed(&self) -> bool {
        self.command(Method::GET, "/displayed", None, "is_displayed()").await.as_bool().unwrap_or(false)
    }

    /// The first element matching `css` inside this one.
    pub async fn find(&self, css: &str) -> Element<'b> {
        let what = format!("find({css:?}) within {:?}", self.selector);
        let found = self.browser.command(Method::POST, &self.path("/element"), Some(by_css(css)), &what).await;
        self.browser.element(found, format!("{} {css}", self.selector), &what).await
    }

    /// Every element matching `css` inside this one.
    pub async fn find_all(&self, css: &str) -> Vec<Element<'b>> {
        let what = format!("find_all({css:?}) within {:?}", self.selector);
        let found = self.browser.command(Method::POST, &self.path("/elements"), Some(by_css(css)), &what).await;
        self.browser.elements(found, &format!("{} {css}", self.selector), &what).await
    }

    /// The element as an argument of `Browser::execute`.
    pub fn as_arg(&self) -> Value {
        json!({ ELEMENT_KEY: self.id })
    }
}

fn by_css(css: &str) -> Value {
    json!({"using": "css selector", "value": css})
}

fn string(value: Value) -> String {
    match value {
        Value::String(text) => text,
        other => panic!("WebDriver answered {other} where a string was expected"),
    }
}

/// One WebDriver request: the answer's `value`, or its error.
async fn request(
    http: &reqwest::Client,
    method: Method,
    url: &str,
    body: Option<Value>,
) -> Result<Value, WebDriverError> {
    let transport =
        |error: reqwest::Error| WebDriverError { error: "transport".to_owned(), message: error.to_string() };
    let mut request = http.request(method, url);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.map_err(transport)?;
    let status = response.status();
    let text = response.text().await.map_err(transport)?;
    let mut answer: Value = serde_json::from_str(&text)
        .map_err(|_| WebDriverError { error: format!("HTTP {status}"), message: format!("not JSON: {text}") })?;
    let value = answer["value"].take();
    if status.is_success() {
        return Ok(value);
    }
    let error = value["error"].as_str().unwrap_or("unknown error").to_owned();
    // ChromeDriver repeats the error code before its message and appends "(Session info: chrome=…)"; its native
    // stack trace comes separately. What is left is what helps.
    let message = value["message"].as_str().unwrap_or_default();
    let message = message.strip_prefix(&format!("{error}: ")).unwrap_or(message);
    let message = message.split("(Session info:").next().unwrap_or_default().trim().to_owned();
    Err(WebDriverError { error, message })
}

/// A bodiless HTTP/1.1 request to ChromeDriver without an async runtime (for `Drop`); whether it answered 200.
fn blocking_request(port: u16, method: &str, path: &str) -> bool {
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut stream) = TcpStream::connect_timeout(&address, Duration::from_secs(2)) else {
        return false;
    };
    // Quitting Chromium takes well under a second; the bound only keeps a wedged driver from hanging the test.
    let _ = stream.set_read_timeout(Some(Duration::from_secs(20)));
    let head =
        format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    if stream.write_all(head.as_bytes()).is_err() {
        return false;
    }
    // The status line is the answer: ChromeDriver keeps the connection open despite `Connection: close`, so
    // reading to the end would wait out the timeout.
    let mut answer = Vec::new();
    let mut chunk = [0; 256];
    while answer.len() < STATUS_OK.len() {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(read) => answer.extend_from_slice(&chunk[..read]),
        }
    }
    answer.starts_with(STATUS_OK)
}

const STATUS_OK: &[u8] = b"HTTP/1.1 200";
