"""`intformer search` on a real PostgreSQL server: the shared study of several workers (one
machine's worker processes, or separate searches as on several machines).

The server is the Debian package's (``apt-get install postgresql``; ``make system-deps`` installs
it as root): this module initdb's a cluster in a temporary directory and starts it there,
listening only on a unix socket in that directory (no port shared with anything else). As root
it runs as the user ``nobody`` (PostgreSQL refuses to run as root), who owns the directory.

The training is tiny (1 float epoch and 1 QAT epoch on 200 windows), as in test_search.py."""
import glob
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import optuna
import pytest

from flows import search as S
from flows.run import TrainOptions

pytestmark = pytest.mark.postgres

TINY = {"epochs": 1, "float_epochs": 1, "verify": False,
        "train": TrainOptions(max_train_windows=200)}
PASSWORD = "s3cret-intformer"
SERVER_USER = "nobody"      # the server's user when the tests run as root


def postgres_bin():
    """The directory of initdb, pg_ctl and postgres: on PATH or Debian's
    /usr/lib/postgresql/<version>/bin (newest version); None if absent."""
    names = ("initdb", "pg_ctl", "postgres")
    found = [shutil.which(n) for n in names]
    if all(found) and len({os.path.dirname(os.path.realpath(f)) for f in found}) == 1:
        return os.path.dirname(os.path.realpath(found[0]))
    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                    key=lambda p: int(p.split("/")[-2]) if p.split("/")[-2].isdigit() else 0,
                    reverse=True):
        if all(os.access(os.path.join(d, n), os.X_OK) for n in names):
            return d
    return None


class PostgresServer:
    """A PostgreSQL cluster in a temporary directory, on a unix socket in that directory."""

    def __init__(self, bindir: str):
        self.bindir = bindir
        self.user = None
        if os.getuid() == 0:
            try:
                self.user = pwd.getpwnam(SERVER_USER)
            except KeyError:
                pytest.skip(f"running as root and there is no user {SERVER_USER!r} to run the "
                            f"PostgreSQL server as (it refuses to run as root)")
        # Under /tmp (not pytest's tmp_path, private to root, nor a TMPDIR that may be): the
        # server's user must reach it, and a unix socket's path must stay under 108 bytes.
        # Its own directory, owned by that user, mode 0700.
        self.dir = Path(tempfile.mkdtemp(prefix="intformer-pg-",
                                         dir="/tmp" if os.path.isdir("/tmp") else None))
        if self.user:
            os.chown(self.dir, self.user.pw_uid, self.user.pw_gid)
        self.data = self.dir / "data"
        self.port = 5432            # only names the socket file: nothing listens on TCP
        self.started = False

    def run(self, *argv):
        """A server program as the server's user; its output in the error if it fails."""
        kw = {}
        if self.user:
            kw = {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C", "LC_ALL": "C",
               "HOME": str(self.dir)}
        r = subprocess.run([os.path.join(self.bindir, argv[0]), *argv[1:]], cwd=self.dir,
                           env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           **kw)
        if r.returncode != 0:
            log = self.dir / "server.log"
            raise RuntimeError(f"{' '.join(argv)} failed ({r.returncode}):\n{r.stdout}\n"
                               f"{r.stderr}\n{log.read_text() if log.is_file() else ''}")
        return r

    def start(self):
        pwfile = self.dir / "pwfile"
        pwfile.write_text(PASSWORD + "\n")
        if self.user:
            os.chown(pwfile, self.user.pw_uid, self.user.pw_gid)
        self.run("initdb", "-D", str(self.data), "-U", "intformer", f"--pwfile={pwfile}",
                 "--auth=scram-sha-256", "-E", "UTF8", "--locale=C", "--no-sync")
        pwfile.unlink()
        self.run("pg_ctl", "-D", str(self.data), "-l", str(self.dir / "server.log"), "-w",
                 "-o", f"-c listen_addresses='' -c unix_socket_directories='{self.dir}' "
                       f"-p {self.port} -c fsync=off", "start")
        self.started = True

    def stop(self):
        try:
            if self.started:
                self.run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def url(self, database: str) -> str:
        """The SQLAlchemy URL of a database (psycopg 3 named: SQLAlchemy 2.0 and 2.1 alike)."""
        return (f"postgresql+psycopg://intformer:{PASSWORD}@/{database}"
                f"?host={self.dir}&port={self.port}")

    def create_database(self, name: str) -> str:
        import psycopg
        with psycopg.connect(host=str(self.dir), port=self.port, user="intformer",
                             password=PASSWORD, dbname="postgres", autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


@pytest.fixture(scope="module")
def postgres():
    bindir = postgres_bin()
    if bindir is None:
        pytest.skip("PostgreSQL server programs (initdb, pg_ctl, postgres) are not on PATH nor "
                    "in /usr/lib/postgresql/*/bin: apt-get install postgresql (make system-deps "
                    "does it when run as root)")
    server = PostgresServer(bindir)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def database(postgres, request):
    """A new database of the server for one test: its storage URL."""
    name = "t_" + "".join(c if c.isalnum() else "_" for c in request.node.name)[:50].lower()
    return postgres.create_database(name)


def stored_trials(url: str, study: str):
    storage = S.open_storage(url)
    try:
        return optuna.load_study(study_name=study, storage=storage).get_trials()
    finally:
        storage.engine.dispose()


def front_numbers(trials) -> list:
    """The non-dominated finished trials (both objectives minimised), computed here from the
    stored values alone, sorted by (cycles, RMSE, number) as search.json lists them."""
    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]

    def dominated(t):
        return any(all(a <= b for a, b in zip(o.values, t.values)) and o.values != t.values
                   for o in done)
    front = [t for t in done if not dominated(t)]
    return [t.number for t in sorted(front, key=lambda t: (t.values[1], t.values[0], t.number))]


def check_trials(trials, asked: int):
    """Every asked trial finished once: numbers 0..asked-1, no parameter set twice, the
    anchors once each."""
    finished = [t for t in trials if t.state.is_finished()]
    assert len(trials) == len(finished) == asked
    assert sorted(t.number for t in trials) == list(range(asked))
    assert len({json.dumps(t.params, sort_keys=True) for t in trials}) == asked
    assert sorted(t.user_attrs.get("anchor") or "" for t in trials if t.user_attrs.get("anchor")) \
        == ["xc7s15 preset, uniform 4 bits", "xc7s15 preset, uniform 8 bits"]
    assert all(t.state != optuna.trial.TrialState.FAIL for t in trials), \
        [t.user_attrs.get("fail_reason") for t in trials]
    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    for t in done:      # the values the objective recorded are the trial's objectives
        assert t.values == [t.user_attrs["val_rmse"], t.user_attrs["cycles"]]
    return done


def test_missing_server_driver_says_what_to_install(postgres):
    """The server is there but the URL names a driver that is not installed."""
    url = postgres.url("postgres").replace("postgresql+psycopg", "postgresql+pg8000")
    with pytest.raises(S.SearchError, match=r"driver \(Python module 'pg8000'\) is not "
                                            r"installed: pip install pg8000") as e:
        S.open_storage(url)
    assert PASSWORD not in str(e.value)


@pytest.mark.slow
def test_searches_starting_together_set_the_study_up_once(postgres, database, tmp_path):
    """Four processes open one new database and create one study at the same moment, as the
    machines of a shared search do: the tables are created once without an error, and the
    study has its setup and the two preset anchors once."""
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from flows import search as S\n"
        "url, out = sys.argv[1], Path(sys.argv[2])\n"
        "out.mkdir()\n"
        "opts = S.SearchOptions(device='xc7s15', out=out, storage=url, study='together')\n"
        "space = S.SearchSpace({'features': 7, 'window': 24, 'd_model': 16, 'heads': 1,\n"
        "                       'layers': 1, 'ffn': 64, 'norm': 'batchnorm',\n"
        "                       'activation': 'relu'}, 'xc7s15')\n"
        "print('ready', flush=True)\n"
        "sys.stdin.readline()     # every process is ready: go\n"
        "storage, study = S.open_study(opts, space, {'setup': 1})\n"
        "storage.engine.dispose()\n")
    procs = [subprocess.Popen([sys.executable, "-c", script, database, str(tmp_path / f"m{i}")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(4)]
    for p in procs:
        assert p.stdout.readline() == "ready\n", p.communicate()[1]
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    results = [p.communicate() for p in procs]
    for p, (out, err) in zip(procs, results):
        assert p.returncode == 0, err
    trials = stored_trials(database, "together")
    assert len(trials) == 2
    assert sorted(t.user_attrs["anchor"] for t in trials) == [
        "xc7s15 preset, uniform 4 bits", "xc7s15 preset, uniform 8 bits"]
    storage = S.open_storage(database)
    try:
        study = optuna.load_study(study_name="together", storage=storage)
        assert study.user_attrs["setup"] == {"setup": 1}
        assert [s.study_name for s in optuna.get_all_study_summaries(storage)] == ["together"]
    finally:
        storage.engine.dispose()


@pytest.mark.slow
def test_two_workers_share_one_postgres_study(database, tmp_path):
    """`intformer search --workers 2` (this process and a spawned one) on a PostgreSQL study:
    six trials (the two presets, four sampled from the front), each run once, and the front
    search.json reports is the one computed from the stored trials."""
    out = tmp_path / "s"
    doc = S.search(S.SearchOptions(device="xc7s15", out=out, trials=6, workers=2,
                                   storage=database, study="two-workers", **TINY),
                   progress=lambda m: None)
    trials = stored_trials(database, "two-workers")
    done = check_trials(trials, 6)
    assert sorted({t.user_attrs["worker"] for t in trials}) == [0, 1]      # two processes
    assert {d["number"]: d["state"] for d in doc["trials"]} == \
        {t.number: t.state.name for t in trials}
    assert len(done) >= 2 and doc["pareto"] == front_numbers(trials)
    assert doc["pareto"] == [d["number"] for d in S.pareto_front(
        [S.trial_doc(t) for t in trials])]
    assert doc["chosen"]["trial"] in doc["pareto"]
    text = (out / "search.json").read_text()
    assert json.loads(text)["pareto"] == doc["pareto"] and PASSWORD not in text
    assert PASSWORD not in doc["storage"] and "intformer:***@" in doc["storage"]


@pytest.mark.slow
def test_two_machines_share_one_postgres_study(database, tmp_path):
    """Two `intformer search` commands started together, each with its own output directory
    (as on two machines: nothing shared but the database), three trials each, on one study:
    six trials each run once, every trained trial's weights in exactly one of the two
    directories, and the search that finished last reports the front of all six."""
    outs = [tmp_path / "machine-a", tmp_path / "machine-b"]
    procs = [subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "search", "--device", "xc7s15", "--out", str(o),
         "--storage", database, "--study", "machines", "--trials", "3", "--epochs", "1",
         "--float-epochs", "1", "--max-train-windows", "200", "--no-verify", "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for o in outs]
    results = [p.communicate() for p in procs]
    for p, (stdout, stderr) in zip(procs, results):
        assert p.returncode == 0, stdout + stderr
        assert PASSWORD not in stdout + stderr
    trials = stored_trials(database, "machines")
    done = check_trials(trials, 6)
    for t in done:
        saved = [o for o in outs if (S._trial_dir(o, "machines", t.number) / "qat.pt").is_file()]
        assert len(saved) == 1, (t.number, saved)
    docs = [json.loads((o / "search.json").read_text()) for o in outs]
    last = [d for d in docs if sum(x["state"] in ("COMPLETE", "PRUNED") for x in d["trials"]) == 6]
    assert last, [d["counts"] for d in docs]
    for d in last:
        assert d["pareto"] == front_numbers(trials)
        assert d["chosen"]["trial"] in d["pareto"]
