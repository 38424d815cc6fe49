//! A private instance of Debian's `apache2` for end-to-end tests: its own config, port,
//! DocumentRoot and combined access log under a temporary directory.

use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::wait_for;

pub const APACHE: &str = "/usr/sbin/apache2";
pub const MODULES: &str = "/usr/lib/apache2/modules";

/// What is missing to run apache here (empty when it can run).
pub fn missing() -> Vec<&'static str> {
    [
        (!Path::new(APACHE).exists()).then_some(APACHE),
        (!Path::new(MODULES).join("mod_mpm_event.so").exists()).then_some("apache2 modules"),
    ]
    .into_iter()
    .flatten()
    .collect()
}

pub fn is_root() -> bool {
    std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}

/// A private apache instance; stopped (and killed if need be) when dropped, also on panic.
pub struct Apache {
    pub conf: PathBuf,
    pub port: u16,
    /// The combined access log (`<root>/logs/access.log`).
    pub access_log: PathBuf,
    child: Child,
}

impl Apache {
    /// Serves `site` (paths under the DocumentRoot, each a small HTML file) from `root/www`
    /// and logs to `root/logs/access.log`; returns once it answers on its port.
    pub fn start(root: &Path, site: &[&str]) -> Apache {
        Apache::start_with(root, site, "")
    }

    /// [`Apache::start`] with `extra` appended to the config (more modules, aliases).
    pub fn start_with(root: &Path, site: &[&str], extra: &str) -> Apache {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let www = root.join("www");
        for f in site {
            let p = www.join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, format!("<html><body>{f}</body></html>\n")).unwrap();
        }
        let run = root.join("apache/run");
        std::fs::create_dir_all(&run).unwrap();
        std::fs::create_dir_all(root.join("logs")).unwrap();
        std::fs::write(
            root.join("apache/mime.types"),
            "text/html html\ntext/css css\nimage/png png\nimage/gif gif\nimage/jpeg jpg\ntext/plain txt\n",
        )
        .unwrap();
        // Workers run as www-data when we are root (apache refuses to serve as root).
        let user = if is_root() {
            let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
            let (u, g) = if passwd.lines().any(|l| l.starts_with("www-data:")) {
                ("www-data", "www-data")
            } else {
                ("nobody", "nogroup")
            };
            format!("User {u}\nGroup {g}\n")
        } else {
            String::new()
        };
        let m = MODULES;
        let conf = root.join("apache/apache2.conf");
        let access_log = root.join("logs/access.log");
        std::fs::write(
            &conf,
            format!(
                r#"ServerRoot "{ar}"
LoadModule mpm_event_module {m}/mod_mpm_event.so
LoadModule authz_core_module {m}/mod_authz_core.so
LoadModule mime_module {m}/mod_mime.so
LoadModule dir_module {m}/mod_dir.so
Listen 127.0.0.1:{port}
ServerName localhost
{user}PidFile "{run}/apache2.pid"
DefaultRuntimeDir "{run}"
Mutex file:{run} default
ErrorLog "{ar}/error.log"
LogLevel warn
TypesConfig "{ar}/mime.types"
DocumentRoot "{www}"
<Directory />
    Require all denied
</Directory>
<Directory "{www}">
    Require all granted
</Directory>
DirectoryIndex index.html
LogFormat "%h %l %u %t \"%r\" %>s %O \"%{{Referer}}i\" \"%{{User-Agent}}i\"" combined
CustomLog "{log}" combined
{extra}
"#,
                ar = root.join("apache").display(),
                run = run.display(),
                www = www.display(),
                log = access_log.display(),
            ),
        )
        .unwrap();

        // In the foreground (still `-k start`) so apache's main process is our child: we reap it
        // and can always kill it, and logrotate's `-k graceful` signals it through the pid file.
        let console = root.join("apache/console.log");
        let child = Command::new(APACHE)
            .arg("-f")
            .arg(&conf)
            .args(["-k", "start", "-D", "FOREGROUND"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&console).unwrap())
            .spawn()
            .expect("run apache2");
        let mut a = Apache { conf, port, access_log, child };
        let errors = || {
            let read = |p: PathBuf| std::fs::read_to_string(p).unwrap_or_default();
            format!("{}{}", read(console.clone()), read(root.join("apache/error.log")))
        };
        let pidfile = run.join("apache2.pid");
        let up = wait_for(Duration::from_secs(15), || {
            if let Some(st) = a.child.try_wait().unwrap() {
                panic!("apache2 exited at start ({st}):\n{}", errors());
            }
            pidfile.exists() && TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(up, "apache did not come up on port {port}:\n{}", errors());
        a
    }

    /// The inode of the access log (apache creates it at start).
    pub fn access_inode(&self) -> u64 {
        std::fs::metadata(&self.access_log).expect("apache did not create access.log").ino()
    }
}

impl Drop for Apache {
    fn drop(&mut self) {
        let _ = Command::new(APACHE)
            .arg("-f")
            .arg(&self.conf)
            .args(["-k", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if !wait_for(Duration::from_secs(10), || self.child.try_wait().is_ok_and(|s| s.is_some())) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
