// canopy-bench: measures the figures the foundation promises, each next to a baseline of this machine
// measured in the same run (the machines are shared; absolute numbers move 3-4x, ratios much less).
//
//   swift run -c release canopy-bench            # everything
//   swift run -c release canopy-bench submit     # one part: fsync | spawn | submit | start | history | proxy | exec | enforcer | jupyter | slurm
//
// `slurm` needs a Slurm cluster (scripts/slurm-cluster.sh up DIR; export SLURM_CONF=DIR/slurm.conf), and
// `containers` a container engine with the test image (scripts/dockerd.sh up DIR; --docker-dir DIR); neither is
// part of the default run.
//
// The server under test is the real `canopy serve` binary built next to this one, on loopback, with a fresh
// data directory under /tmp that is removed afterwards.
import CanopyCore
import CanopySQLite
import Foundation

#if canImport(Glibc)
import Glibc
#endif

let arguments = Array(CommandLine.arguments.dropFirst())
if arguments.contains("-h") || arguments.contains("--help") {
    say(
        """
        usage: canopy-bench [PART...] [--seconds N] [--history N] [--slurm-jobs N] [--slurm-known N] [--docker-dir DIR] [--jupyter DIR]
          parts: fsync spawn submit start history proxy exec enforcer jupyter scnet slurm containers (default: all but slurm and containers)
          --seconds N   length of the submission-rate run (default 5)
          --history N   finished workloads seeded for the history run (default 100000; the scnet run seeds a tenth)
          --slurm-jobs N    submissions timed through Canopy and raw sbatch (default 300)
          --slurm-known N   jobs Canopy follows when its status refresh is measured (default 10000)
          --docker-dir DIR  what scripts/dockerd.sh up DIR made: the engine's socket and the test image's files
          --jupyter DIR     a virtual environment with JupyterLab (default /opt/canopy-test/jupyter, as scripts/test.sh makes)
        """)
    exit(0)
}
var parts: [String] = []
var seconds = 5.0
var historySize = 100_000
var slurmJobs = 300
var slurmKnown = 10_000
var dockerDir = ProcessInfo.processInfo.environment["CANOPY_TEST_DOCKER_DIR"] ?? ""
var jupyterVenv = "/opt/canopy-test/jupyter"
var i = 0
while i < arguments.count {
    switch arguments[i] {
    case "--seconds":
        i += 1
        seconds = Double(arguments[safe: i] ?? "") ?? seconds
    case "--history":
        i += 1
        historySize = Int(arguments[safe: i] ?? "") ?? historySize
    case "--slurm-jobs":
        i += 1
        slurmJobs = Int(arguments[safe: i] ?? "") ?? slurmJobs
    case "--docker-dir":
        i += 1
        dockerDir = arguments[safe: i] ?? dockerDir
    case "--jupyter":
        i += 1
        jupyterVenv = arguments[safe: i] ?? jupyterVenv
    case "--slurm-known":
        i += 1
        slurmKnown = Int(arguments[safe: i] ?? "") ?? slurmKnown
    default: parts.append(arguments[i])
    }
    i += 1
}
let all = ["fsync", "spawn", "submit", "start", "history", "proxy", "exec", "enforcer", "jupyter", "scnet", "slurm", "containers"]
if parts.isEmpty { parts = all.filter { $0 != "slurm" && $0 != "containers" } }
for p in parts where !all.contains(p) {
    FileHandle.standardError.write(Data("unknown part \(p); parts: \(all.joined(separator: " "))\n".utf8))
    exit(2)
}

extension Array {
    subscript(safe index: Int) -> Element? { indices.contains(index) ? self[index] : nil }
}

let machine = "\(ProcessInfo.processInfo.activeProcessorCount) CPUs, \(ProcessInfo.processInfo.physicalMemory >> 30) GiB"
say("canopy-bench on \(machine); server: \(siblingBinary("canopy"))\n")

do {
    var fsyncRate: Double?
    if parts.contains("fsync") || parts.contains("submit") {
        let rate = try Baselines.fsyncRate()
        fsyncRate = rate
        say(String(format: "baseline  append+fsync on the data disk          %8.0f /s", rate))
    }
    var spawnRate: Double?
    if parts.contains("spawn") || parts.contains("start") {
        let (rate, p50) = try Baselines.spawnRate()
        spawnRate = rate
        say(String(format: "baseline  posix_spawn+waitpid /bin/true           %8.0f /s   p50 %.2f ms", rate, p50 * 1000))
    }
    if parts.contains("submit") {
        try Benchmarks.submissions(seconds: seconds, fsyncRate: fsyncRate ?? 0)
    }
    if parts.contains("start") {
        try Benchmarks.startLatency(spawnRate: spawnRate ?? 0)
    }
    if parts.contains("history") {
        try await Benchmarks.history(count: historySize)
    }
    if parts.contains("proxy") {
        try ProxyBench.run(seconds: seconds)
    }
    if parts.contains("exec") {
        try ExecBench.run()
    }
    if parts.contains("enforcer") {
        InteractiveBench.enforcer()
    }
    if parts.contains("jupyter") {
        try InteractiveBench.jupyter(venv: jupyterVenv)
    }
    if parts.contains("scnet") {
        try await DialectBench.scnet(count: max(1000, historySize / 10))
    }
    if parts.contains("containers") {
        guard !dockerDir.isEmpty else { throw BenchError("containers: give --docker-dir DIR (scripts/dockerd.sh up DIR)") }
        try ContainerBench.run(dockerDir: dockerDir)
    }
    if parts.contains("slurm") {
        try SlurmBench.run(submissions: slurmJobs, known: slurmKnown)
    }
} catch {
    FileHandle.standardError.write(Data("canopy-bench: \(error)\n".utf8))
    exit(1)
}
