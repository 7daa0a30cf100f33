"""nginx serving the web files of a rendered host (autoconfig, Autodiscover, MTA-STS) on one loopback address."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from mailstack.host import files as hostfiles, records
from mailstack.host.files import HostFile, Placement
from mailstack.local.loopback import LoopbackAddress


def _wait_for(path: Path, present: bool) -> None:
    for _ in range(100):
        if path.exists() == present:
            return
        time.sleep(0.05)


@contextmanager
def rendered_web(settings, roster, address: str) -> Iterator[tuple[dict[str, HostFile], Path]]:
    """Run nginx with the host's rendered files on ``address`` (80 and 443, a self-signed certificate for every
    web name); yields the rendered files and the certificate. Stopped and the address removed, whatever happens."""
    # nginx's workers run as nobody: the root must be readable by others, unlike pytest's tmp_path.
    root = Path(tempfile.mkdtemp(prefix="mailstack-web-"))
    root.chmod(0o755)
    loopback = LoopbackAddress(address)
    main = root / "nginx.conf"
    try:
        files = hostfiles.render_host_files(settings, roster, password_seed="s" * 48, mail_volume_id="vol-0123456789abcdef0",
                                            placement=Placement(root=str(root), address=address))
        for path, file in files.items():
            if "nginx" in path or path.startswith("/var/www"):
                (root / path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
                (root / path.lstrip("/")).write_text(file.content)
        live = root / "etc/letsencrypt/live" / settings.host.name
        live.mkdir(parents=True)
        names = ",".join(f"DNS:{name}" for name in records.certificate_names(settings))
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", live / "privkey.pem",
                        "-out", live / "fullchain.pem", "-days", "2", "-subj", f"/CN={settings.host.name}",
                        "-addext", f"subjectAltName={names}"], check=True, capture_output=True)
        # Debian's nginx.conf includes conf.d/*.conf; this one does the same with paths under the root.
        main.write_text(f"""pid {root}/nginx.pid;
error_log {root}/error.log;
events {{}}
http {{
    include /etc/nginx/mime.types;
    access_log off;
    client_body_temp_path {root}/body;
    proxy_temp_path {root}/proxy;
    include {root}/etc/nginx/conf.d/*.conf;
}}
""")
        check = subprocess.run(["nginx", "-t", "-c", str(main)], capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
        loopback.add()
        subprocess.run(["nginx", "-c", str(main)], check=True, capture_output=True)
        _wait_for(root / "nginx.pid", True)
        yield files, live / "fullchain.pem"
    finally:
        if (root / "nginx.pid").exists():
            subprocess.run(["nginx", "-c", str(main), "-s", "stop"], capture_output=True)
            _wait_for(root / "nginx.pid", False)
        loopback.remove()
        shutil.rmtree(root, ignore_errors=True)
