import CanopyCore
import CanopyHost
import Foundation

/// What Canopy reads from and writes for the Slurm commands, as pure functions (tested without a cluster).
///
/// Canopy talks to Slurm through its command-line tools with fixed `-o`/`-O` output formats rather than `--json` or
/// slurmrestd: those formats have been stable from Slurm 17 through 25.x, while the JSON and REST schemas change with
/// every release (22.05 prints `"state": "idle"`, 23.02+ prints `"state": ["IDLE"]`, REST versions v0.0.38 to v0.0.42
/// come and go), and `squeue --json` costs ~3 KB per job against ~60 bytes here.
public enum SlurmText {
    /// The `squeue` format: id, state, reason, nodes, start, end, comment (the comment last: it is ours).
    public static let squeueFormat = "%i|%T|%r|%N|%S|%e|%k"
    /// The `sinfo -N -O` fields, each ending in `|`.
    public static let sinfoFields = ["NodeList", "Partition", "CPUs", "CPUsState", "Memory", "AllocMem", "Gres", "GresUsed", "StateComplete"]
    /// Canopy's tag in a job's comment: `canopy:<workload id>`.
    public static let commentPrefix = "canopy:"

    // MARK: squeue

    /// One line of `squeue -o squeueFormat`.
    public struct Job: Sendable, Hashable {
        public var id: String
        public var state: String
        public var reason: String
        public var nodes: String
        public var start: String
        public var end: String
        public var comment: String

        /// The workload it runs, when Canopy submitted it.
        public var workloadID: String? {
            tag.map { String($0.prefix { $0 != "#" }) }
        }

        /// Canopy's tag: the workload's id, with `#N` for its Nth restart (see `SlurmText.tag`).
        public var tag: String? {
            comment.hasPrefix(SlurmText.commentPrefix) ? String(comment.dropFirst(SlurmText.commentPrefix.count)) : nil
        }
    }

    /// The tag of a workload's job in its comment: the id for its first start, `ID#N` after its Nth restart (each
    /// start is a job of its own).
    public static func tag(workloadID: String, attempt: Int) -> String {
        attempt == 0 ? workloadID : "\(workloadID)#\(attempt)"
    }

    /// The file, in the workload's directory, where a start's job writes its id when it begins: `job.id` for the
    /// first start, `job.N.id` after the Nth restart.
    public static func jobIDFile(attempt: Int) -> String {
        attempt == 0 ? "job.id" : "job.\(attempt).id"
    }

    /// A task's ports file (`task-N/ports`, written by the task on its node): `DECLARED ACTUAL` per line. The task
    /// writes it, so it is read strictly: ports in range, nothing else.
    public static func portMap(_ text: String) -> [Int: Int] {
        var map: [Int: Int] = [:]
        for line in text.split(separator: "\n").prefix(256) {
            let parts = line.split(separator: " ")
            guard parts.count == 2, let p = Int(parts[0]), let q = Int(parts[1]), (1...65535).contains(p), (1...65535).contains(q) else { continue }
            map[p] = q
        }
        return map
    }

    /// Whether a node name a task reported is one Slurm could have given (letters, digits, `-`, `_`, `.`).
    public static func isNodeName(_ s: String) -> Bool {
        !s.isEmpty && s.count <= 128 && s.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "-_.".contains($0)) }
    }

    /// The minutes of Slurm's time limit for an interactive workload's lease: a minute beyond it, as Canopy ends
    /// the job itself at the lease's end (to the second, with `LeaseExpired`) and Slurm's limit is only the
    /// backstop should Canopy not be there.
    public static func leaseMinutes(_ seconds: Int) -> Int {
        // Clamped: a lease has no upper bound where a queue has no cap, and Slurm refuses what it cannot hold.
        (min(max(seconds, 0), Int.max / 2) + 59) / 60 + 1
    }

    /// Parses squeue's output; lines that do not have the seven fields are skipped.
    public static func jobs(_ output: Data) -> [Job] {
        var out: [Job] = []
        out.reserveCapacity(output.count / 60)
        output.withUnsafeBytes { raw in
            let bytes = raw.bindMemory(to: UInt8.self)
            var lineStart = 0
            let n = bytes.count
            var i = 0
            while i <= n {
                if i == n || bytes[i] == 0x0A {
                    if i > lineStart, let job = parseJob(UnsafeBufferPointer(rebasing: bytes[lineStart..<i])) { out.append(job) }
                    lineStart = i + 1
                }
                i += 1
            }
        }
        return out
    }

    private static func parseJob(_ line: UnsafeBufferPointer<UInt8>) -> Job? {
        var parts: [String] = []
        parts.reserveCapacity(7)
        var start = 0
        for i in 0..<line.count where line[i] == 0x7C && parts.count < 6 {
            parts.append(String(decoding: UnsafeBufferPointer(rebasing: line[start..<i]), as: UTF8.self))
            start = i + 1
        }
        guard parts.count == 6 else { return nil }
        parts.append(String(decoding: UnsafeBufferPointer(rebasing: line[start..<line.count]), as: UTF8.self))
        return Job(id: parts[0], state: parts[1], reason: parts[2], nodes: parts[3], start: parts[4], end: parts[5], comment: parts[6])
    }

    /// Job states after which nothing more happens.
    public static func isTerminal(_ state: String) -> Bool {
        switch state {
        case "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL", "DEADLINE", "SPECIAL_EXIT", "REVOKED":
            true
        default: false
        }
    }

    /// Job states in which its tasks run (or ran and are being cleaned up).
    public static func hasStarted(_ state: String) -> Bool {
        switch state {
        case "RUNNING", "COMPLETING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT", "RESIZING": true
        default: false
        }
    }

    /// Why a pending job waits, as a Canopy reason (Slurm's own word stays in the message).
    public static func pendingReason(_ raw: String, jobID: String) -> Reason {
        let code: Reason.Code
        let why: String
        switch raw {
        case "Resources", "Nodes_required_for_job_are_DOWN,_DRAINED_or_reserved_for_jobs_in_higher_priority_partitions":
            (code, why) = (.insufficientResources, "waiting for CPUs, memory or GPUs to become free")
        case "Priority":
            (code, why) = (.queued, "waiting behind jobs of higher priority")
        case "None", "":
            (code, why) = (.queued, "waiting for Slurm's next scheduling pass")
        case "BeginTime":
            (code, why) = (.queued, "waiting for its begin time")
        case "JobHeldUser", "JobHeldAdmin":
            (code, why) = (.held, "held in Slurm; release it there (scontrol release \(jobID))")
        case "Dependency", "DependencyNeverSatisfied":
            (code, why) = (.waitingForDependency, "waiting for the jobs it depends on")
        case _ where raw.hasPrefix("ReqNodeNotAvail") || raw.hasPrefix("Partition") || raw == "NodeDown" || raw.hasPrefix("Reservation"):
            (code, why) = (.nodesUnavailable, "the nodes it may run on are down, drained, reserved or outside its partition's limits")
        case _ where raw.hasPrefix("QOS") || raw.hasPrefix("Assoc") || raw.hasPrefix("AccountNotAllowed") || raw.hasSuffix("Limit"):
            (code, why) = (.quotaExceeded, "held back by a Slurm limit (QOS or association)")
        default:
            (code, why) = (.queued, "waiting")
        }
        return Reason(code, "Slurm job \(jobID) is pending (\(raw.isEmpty ? "None" : raw)): \(why)")
    }

    /// Why a job that ended did so, when its state says more than the exit codes (nil for COMPLETED and FAILED).
    public static func endReason(state: String, jobID: String, nodes: String) -> Reason? {
        switch state {
        case "OUT_OF_MEMORY": Reason(.outOfMemory, "Slurm job \(jobID) was killed for using more memory than it asked for")
        case "TIMEOUT", "DEADLINE": Reason(.maxDurationExceeded, "Slurm job \(jobID) reached its time limit")
        case "NODE_FAIL", "BOOT_FAIL":
            Reason(.nodeFailure, "Slurm job \(jobID) ended because \(nodes.isEmpty ? "its node" : "node \(nodes)") failed (\(state))")
        case "PREEMPTED": Reason(.preempted, "Slurm job \(jobID) was preempted by a job of higher priority")
        case "CANCELLED", "REVOKED": Reason(.cancelledInBackend, "Slurm job \(jobID) was cancelled in Slurm (scancel), not through Canopy")
        default: nil
        }
    }

    /// Parses Slurm's local time stamps (`2026-11-22T10:00:00`); nil for `N/A`, `Unknown` and the like.
    public static func date(_ text: String) -> Date? {
        let f = text.split(whereSeparator: { $0 == "-" || $0 == "T" || $0 == ":" }).compactMap { Int($0) }
        guard f.count == 6 else { return nil }
        var c = DateComponents()
        (c.year, c.month, c.day, c.hour, c.minute, c.second) = (f[0], f[1], f[2], f[3], f[4], f[5])
        return Calendar.current.date(from: c)
    }

    // MARK: sinfo

    /// Parses `sinfo -h -N -O <sinfoFields with "|">`: one view per node and partition, as sinfo lists them.
    public static func nodes(_ output: String) -> [NodeView] {
        output.split(separator: "\n").compactMap { line -> NodeView? in
            let f = line.split(separator: "|", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
            guard f.count >= 9, let cpus = Int(f[2]), let memory = Int(f[4]) else { return nil }
            let allocCPUs = f[3].split(separator: "/").first.flatMap { Int($0) } ?? 0
            let gpus = gpus(f[6])
            let node = Node(
                name: f[0], pool: f[1].hasSuffix("*") ? String(f[1].dropLast()) : f[1], state: nodeState(f[8]), cpuMillis: cpus * 1000,
                memoryMiB: memory, gpus: gpus, gpuSource: "slurm")
            var n = node
            n.backendState = f[8]
            return NodeView(node: n, allocatedCPUMillis: allocCPUs * 1000, allocatedMemoryMiB: Int(f[5]) ?? 0, allocatedGPUs: usedGPUs(f[7]), tasks: 0)
        }
    }

    /// Slurm's node state (`idle`, `mixed`, `allocated+drain`, `down*`, ...) as Canopy's.
    public static func nodeState(_ raw: String) -> NodeState {
        let s = raw.lowercased()
        let flags = Set(s.split(whereSeparator: { $0 == "+" }).map { $0.trimmingCharacters(in: CharacterSet(charactersIn: "*~#!%$@^-")) })
        if s.contains("*") || flags.contains("down") || flags.contains("not_responding") || flags.contains("fail") || flags.contains("unknown")
            || flags.contains("future") || flags.contains("inval")
        {
            return .down
        }
        if flags.contains("drained") { return .drained }
        if flags.contains("draining") { return .draining }
        if flags.contains("drain") { return flags.contains("idle") ? .drained : .draining }
        return .ready
    }

    /// GPUs from a GRES string: `gpu:a100:4(S:0-1),gpu:t4:1` gives indices 0-3 of model `a100` and 4 of `t4`.
    public static func gpus(_ gres: String) -> [GPU] {
        var out: [GPU] = []
        for entry in splitTop(gres) where entry.hasPrefix("gpu") {
            let plain = entry.split(separator: "(").first.map(String.init) ?? entry
            let parts = plain.split(separator: ":").map(String.init)
            guard parts.first == "gpu", let count = parts.last.flatMap({ Int($0) }) else { continue }
            let model = parts.count >= 3 ? parts[1] : "gpu"
            for _ in 0..<count { out.append(GPU(index: out.count, model: model)) }
        }
        return out
    }

    /// GPU indices in use from `GresUsed`: `gpu:fake:2(IDX:0-1),gpu:t4:0(IDX:N/A)` gives 0 and 1.
    public static func usedGPUs(_ used: String) -> [Int] {
        var out: [Int] = []
        var rest = Substring(used)
        while let r = rest.range(of: "IDX:") {
            rest = rest[r.upperBound...]
            let list = rest.prefix { $0 != ")" }
            for part in list.split(separator: ",") {
                let bounds = part.split(separator: "-").compactMap { Int($0) }
                if bounds.count == 2, bounds[0] <= bounds[1] { out += Array(bounds[0]...bounds[1]) } else if bounds.count == 1 { out.append(bounds[0]) }
            }
        }
        return out.sorted()
    }

    /// Splits at commas outside parentheses and brackets.
    static func splitTop(_ s: String) -> [String] {
        var out: [String] = []
        var depth = 0
        var cur = ""
        for ch in s {
            if ch == "(" || ch == "[" { depth += 1 }
            if ch == ")" || ch == "]" { depth -= 1 }
            if ch == "," && depth == 0 {
                out.append(cur)
                cur = ""
            } else {
                cur.append(ch)
            }
        }
        if !cur.isEmpty { out.append(cur) }
        return out
    }

    /// Expands a Slurm host list: `n[1-3,7],gpu01` gives n1, n2, n3, n7, gpu01 (zero padding kept).
    public static func hostnames(_ list: String) -> [String] {
        var out: [String] = []
        for entry in splitTop(list) where !entry.isEmpty {
            guard let open = entry.firstIndex(of: "["), let close = entry.lastIndex(of: "]"), open < close else {
                out.append(entry)
                continue
            }
            let prefix = entry[..<open]
            let suffix = entry[entry.index(after: close)...]
            for part in entry[entry.index(after: open)..<close].split(separator: ",") {
                let b = part.split(separator: "-")
                if b.count == 2, let lo = Int(b[0]), let hi = Int(b[1]), lo <= hi, hi - lo < 100_000 {
                    let width = b[0].count
                    for v in lo...hi {
                        let digits = String(v)
                        out.append(String(prefix) + String(repeating: "0", count: max(0, width - digits.count)) + digits + String(suffix))
                    }
                } else {
                    out.append(String(prefix + part + suffix))
                }
            }
        }
        return out
    }

    // MARK: sbatch

    /// Quotes a word for `/bin/sh`.
    public static func shellQuote(_ s: String) -> String {
        "'" + s.replacingOccurrences(of: "'", with: "'\\''") + "'"
    }

    /// The batch script: records the job id, then runs every task with one `srun`, each in its own directory, with
    /// its output in its own log files and its exit status in its own exit file (see `TaskLayout`).
    ///
    /// `directory` is the workload's directory (holding `task-N/`); `workdir` the working directory inside each task's
    /// `work`, relative ("" for `work` itself).
    /// With `sandbox`, each task runs in the image's root file system (see `ImageSandbox`).
    ///
    /// Each task writes the node it runs on to `task-N/node` and, for a workload that declares ports, picks for each
    /// a port nothing on its node uses, exports it as `CANOPY_PORT_<declared>` and writes `task-N/ports`
    /// (`DECLARED ACTUAL` lines) before its command starts: tasks of several jobs may share a node, so the declared
    /// port names the endpoint and the actual one is the node's. With `taskPlaceholders`, `{port}` (the first
    /// port's actual one) and `{task}` in the command's words are filled in by the task (an app's command).
    public static func batchScript(
        workloadID: String, directory: String, workdir: String, spec: WorkloadSpec, extraEnv: [String: String], sandbox: ImageSandbox? = nil,
        attempt: Int = 0, taskPlaceholders: Bool = false
    ) -> String {
        let q = shellQuote
        var lines = [
            "#!/bin/sh",
            "# Canopy workload \(workloadID), submitted by canopy serve.",
            "echo \"$SLURM_JOB_ID\" > \(q(directory + "/" + jobIDFile(attempt: attempt)))",
            // A stop sends SIGTERM to every process of the job: the shells wait for their command to end (a trap
            // runs after the foreground command; an ignored signal would be inherited, a trap is not), so a task
            // that handles SIGTERM has the grace period to finish, and its exit status is recorded.
            "trap : TERM",
        ]
        lines += exports(workloadID: workloadID, spec: spec, extraEnv: extraEnv, sandbox: sandbox)
        // The placeholders' port is Canopy's word only (the task's shell evaluates it), never the workload's env.
        if taskPlaceholders, let first = spec.ports.first {
            lines.append("export CANOPY_APP_PORT=\(first.port)")
        } else {
            lines.append("unset CANOPY_APP_PORT")
        }
        // Each task: its index, its own directory, its working directory; the exit status is written by the task's
        // shell after the command ends (a task killed by a signal writes none, and Slurm's state says why).
        var task = """
            trap : TERM
            d="$1/task-$SLURM_PROCID"; w="$d/work$2"; sub="$2"; info=sandbox.info; shift 2
            export CANOPY_TASK_INDEX="$SLURM_PROCID" CANOPY_NODE="$SLURMD_NODENAME" HOME="$w"
            cd "$w" || { echo "exit 126" > "$d/exit"; exit 126; }
            printf '%s\\n' "$SLURMD_NODENAME" > "$d/node"

            """
        task += portsLines + "\n"
        if let sandbox {
            task += sandbox.wrap(workloadEnv: spec.env.filter { WorkloadSpec.isValidEnvName($0.key) }) + "\n"
        } else {
            task += "\"$@\"; c=$?\n"
        }
        task += """
            echo "exit $c" > "$d/exit"
            exit $c
            """
        let argv = spec.command.map(q).joined(separator: " ")
        let args = "canopy-task \(q(directory)) \(q(workdir.isEmpty ? "" : "/" + workdir)) \(argv)"
        if spec.tasks == 1 {
            // One task runs in the batch step itself: no job step to create, so it starts even while slurmctld is
            // briefly unreachable, and the job's state (OUT_OF_MEMORY, ...) is the task's.
            lines.append(
                "SLURM_PROCID=0 /bin/sh -c \(q(task)) \(args) >\(q(directory + "/task-0/stdout.log")) 2>\(q(directory + "/task-0/stderr.log"))")
        } else {
            lines.append(
                "srun --kill-on-bad-exit=1 --output=\(q(directory + "/task-%t/stdout.log")) --error=\(q(directory + "/task-%t/stderr.log")) "
                    + "/bin/sh -c \(q(task)) \(args)")
        }
        lines.append("c=$?")
        lines.append("echo \"exit $c\" > \(q(directory + "/batch.exit"))")
        lines.append("exit $c")
        return lines.joined(separator: "\n") + "\n"
    }

    /// The script `canopy exec` (and SSH) runs a command with inside a running task, as a step of its job
    /// (`srun --overlap`): `exec.sh DIRECTORY TASK SUBDIR COMMAND...`. The command gets what the task got: the
    /// workload's environment, the task's variables (its ports too), its working directory, and for an image, a
    /// sandbox of the same image with the same `/workspace` (a sandbox of its own: its processes and `/tmp` are
    /// not the task's).
    public static func execScript(workloadID: String, spec: WorkloadSpec, extraEnv: [String: String], sandbox: ImageSandbox? = nil) -> String {
        var lines = ["#!/bin/sh", "# canopy exec into a task of Canopy workload \(workloadID)."]
        lines += exports(workloadID: workloadID, spec: spec, extraEnv: extraEnv, sandbox: sandbox)
        var body = """
            d="$1/task-$2"; w="$d/work$3"; sub="$3"; info="exec.$$.info"
            export CANOPY_TASK_INDEX="$2" CANOPY_NODE="$SLURMD_NODENAME" HOME="$w"
            shift 3
            cd "$w" || exit 126
            if [ -r "$d/ports" ]; then while read -r p a; do case "$p$a" in *[!0-9]*|"") ;; *) export "CANOPY_PORT_$p=$a" ;; esac; done < "$d/ports"; fi

            """
        if let sandbox {
            body += sandbox.wrap(workloadEnv: spec.env.filter { WorkloadSpec.isValidEnvName($0.key) }) + "\n"
            body += "rm -f \"$d/$info\"\n"
        } else {
            body += "\"$@\"; c=$?\n"
        }
        body += "exit $c"
        lines.append(body)
        return lines.joined(separator: "\n") + "\n"
    }

    /// The workload's variables as `export` lines (the job's and an exec's).
    private static func exports(workloadID: String, spec: WorkloadSpec, extraEnv: [String: String], sandbox: ImageSandbox?) -> [String] {
        var env = spec.env
        for (k, v) in extraEnv { env[k] = v }
        env["CANOPY_WORKLOAD_ID"] = workloadID
        env["CANOPY_TASK_COUNT"] = String(spec.tasks)
        if !spec.ports.isEmpty { env["CANOPY_PORTS"] = spec.ports.map { String($0.port) }.joined(separator: ",") }
        // Names are checked at submit (letters, digits, _); one that is not a shell name never reaches the script.
        // In a sandbox, the workload's own variables are the sandbox's only (bwrap --setenv): its PATH or
        // LD_PRELOAD must not change the node's srun, bwrap and shell around it.
        return env.sorted(by: { $0.key < $1.key }).compactMap { k, v in
            WorkloadSpec.isValidEnvName(k) && (sandbox == nil || spec.env[k] == nil) ? "export \(k)=\(shellQuote(v))" : nil
        }
    }

    /// Shell lines of a task that declares ports (`CANOPY_PORTS`): a free port of the node for each (one that no
    /// socket of the node, in any state, has as its local port, nor one picked before), exported as
    /// `CANOPY_PORT_<declared>`, listed in `$d/ports`; then `{port}` and `{task}` filled into the command's words
    /// where `CANOPY_APP_PORT` asks for it.
    static let portsLines = """
        if [ -n "$CANOPY_PORTS" ]; then
          used=" $(awk 'NR>1 { split($2, a, ":"); printf "%s ", a[2] }' /proc/net/tcp /proc/net/tcp6 2>/dev/null)"
          : > "$d/ports.new"
          for p in $(echo "$CANOPY_PORTS" | tr ',' ' '); do
            while :; do
              a=$(( $(od -An -N2 -tu2 /dev/urandom) % 12000 + 20000 ))
              h=$(printf '%04X' "$a")
              case "$used" in *" $h "*) continue ;; esac
              used="$used$h "
              break
            done
            export "CANOPY_PORT_$p=$a"
            echo "$p $a" >> "$d/ports.new"
          done
          mv -f "$d/ports.new" "$d/ports"
        fi
        if [ -n "$CANOPY_APP_PORT" ]; then
          eval "a=\\${CANOPY_PORT_$CANOPY_APP_PORT}"
          n=$#
          while [ "$n" -gt 0 ]; do
            v=$(printf '%s' "$1" | sed -e "s/{port}/$a/g" -e "s/{task}/$SLURM_PROCID/g"); shift; set -- "$@" "$v"; n=$((n - 1))
          done
        fi
        """

    /// How a task runs in an image's root file system on a node: in a bubblewrap sandbox (`bwrap`, unprivileged,
    /// through a user namespace), as the job's user.
    ///
    /// The sandbox's `/` is a fresh tmpfs holding the image's top-level directories and files bound read-only and
    /// its top-level links recreated (the image's files are shared by every task that runs it, so none may change
    /// them); `/proc`, `/dev` and `/tmp` are the sandbox's own (plus a tmpfs on `/var/tmp` and `/run` where the
    /// image has them); the task's `work` directory is bound at `/workspace`, read-write, and its working directory
    /// is below it; the workload's mounts are bound at their targets; the node's `/etc/resolv.conf` and
    /// `/etc/hosts` are bound over the image's (where it has them). Every namespace but the network is the sandbox's own (a Slurm job
    /// uses the node's network, as MPI needs); the task gets no capabilities and `no_new_privs`. The node's NVIDIA
    /// devices are bound in (Slurm's cgroup decides which the job may open); their driver
    /// libraries are not, so CUDA images on Slurm need the driver's user-space libraries in the image.
    ///
    /// The environment: the job's (Slurm's variables, `CUDA_VISIBLE_DEVICES`), then the image's for what the
    /// workload's `env` does not set, `PATH` included (a default one where the image has none), `HOME=/workspace`.
    public struct ImageSandbox: Sendable, Hashable {
        /// The root file system's directory on the nodes.
        public var rootfs: String
        /// Its top-level entries: directories and files are bound, links recreated.
        public var entries: [ImageRootEntry]
        /// Directories of the image that get a tmpfs of their own (`var/tmp`, `run`), relative to its root.
        public var tmpfs: [String]
        /// The image's environment, `KEY=value`.
        public var env: [String]
        /// Files of the image the node's own are bound over (`etc/resolv.conf`, `etc/hosts`: where the image has
        /// them as files, since a bind needs its target).
        public var nodeFiles: [String]
        /// The workload's mounts (host paths the job's user can read).
        public var mounts: [ResolvedMount]
        /// Whether the task is root inside the sandbox (its queue allows root): it is still the job's user outside.
        public var asRoot: Bool

        public init(
            rootfs: String, entries: [ImageRootEntry], tmpfs: [String], env: [String], nodeFiles: [String] = [], mounts: [ResolvedMount], asRoot: Bool
        ) {
            self.nodeFiles = nodeFiles
            self.rootfs = rootfs
            self.entries = entries
            self.tmpfs = tmpfs
            self.env = env
            self.mounts = mounts
            self.asRoot = asRoot
        }

        /// The PATH a task gets when its image sets none (Docker's default).
        static let defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

        /// Shell lines that turn the task's arguments ("$@") into a bwrap command line; they run in the task's
        /// shell, where `$d` is the task's directory and `$sub` the working directory below `work` ("" or "/x").
        func wrap(workloadEnv: [String: String]) -> String {
            let q = SlurmText.shellQuote
            var options = ["--unshare-all", "--share-net"]
            // Root in the sandbox keeps its capabilities there, which reach only what the namespace owns.
            options += asRoot ? ["--uid", "0", "--gid", "0"] : ["--cap-drop", "ALL"]
            for e in entries {
                if case .link(let target) = e.kind {
                    options += ["--symlink", q(target), q("/" + e.name)]
                } else {
                    options += ["--ro-bind", q(rootfs + "/" + e.name), q("/" + e.name)]
                }
            }
            // /sys read-only, as a container has it (NCCL and PyTorch read the topology there).
            options += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--ro-bind-try", "/sys", "/sys"]
            for dir in tmpfs { options += ["--tmpfs", q("/" + dir)] }
            for file in nodeFiles { options += ["--ro-bind-try", q("/" + file), q("/" + file)] }
            var imageEnv: [(String, String)] = []
            var hasPath = false
            for entry in env {
                guard let eq = entry.firstIndex(of: "="), eq != entry.startIndex else { continue }
                let key = String(entry[..<eq])
                if key == "PATH" { hasPath = true }
                guard workloadEnv[key] == nil, key != "HOME", !key.hasPrefix("CANOPY_") else { continue }
                imageEnv.append((key, String(entry[entry.index(after: eq)...])))
            }
            if !hasPath, workloadEnv["PATH"] == nil { imageEnv.append(("PATH", Self.defaultPath)) }
            for (k, v) in imageEnv { options += ["--setenv", q(k), q(v)] }
            for (k, v) in workloadEnv.sorted(by: { $0.key < $1.key }) where !k.hasPrefix("CANOPY_") { options += ["--setenv", q(k), q(v)] }
            options += ["--setenv", "HOME", "/workspace"]
            // After /workspace, so that a mount below it is not hidden by it.
            var mountOptions: [String] = []
            for m in mounts { mountOptions += [m.readOnly ? "--ro-bind" : "--bind", q(m.hostPath), q(m.target)] }
            // bwrap dies of a stop's SIGTERM at once, while the task inside may take its grace period: so the
            // sandbox does not die with bwrap, and the shell waits for the sandbox's first process (whose pid bwrap
            // reports on --info-fd) before it records the exit status (bwrap's: 143 after a stop). Slurm ends
            // whatever remains of the job's processes when the job ends. bwrap never reaps that process itself: once
            // bwrap is gone it is a zombie until its new parent reaps it (seconds where PID 1 is slow to, never where
            // it does not), so a zombie counts as ended.
            return """
                command -v bwrap >/dev/null 2>&1 || { echo "canopy: node $SLURMD_NODENAME has no bwrap (bubblewrap), which image workloads on Slurm need" >&2; echo "exit 127" > "$d/exit"; exit 127; }
                set -- -- "$@"
                for g in /dev/nvidia*; do [ -c "$g" ] && set -- --dev-bind "$g" "$g" "$@"; done
                [ -d /dev/nvidia-caps ] && set -- --dev-bind /dev/nvidia-caps /dev/nvidia-caps "$@"
                bwrap --info-fd 9 \(options.joined(separator: " ")) --bind "$d/work" /workspace \(mountOptions.joined(separator: " ")) --chdir "/workspace$sub" "$@" 9>"$d/$info"; c=$?
                p=$(sed -n 's/.*"child-pid": *\\([0-9]*\\).*/\\1/p' "$d/$info" 2>/dev/null)
                while [ -n "$p" ] && kill -0 "$p" 2>/dev/null && [ "$(cut -d' ' -f3 "/proc/$p/stat" 2>/dev/null)" != Z ]; do sleep 0.2; done
                """
        }
    }

    /// sbatch's options for a workload: one job, one Slurm task per Canopy task, all allocated at once (a gang).
    /// An interactive workload's lease becomes the job's time limit (see `leaseMinutes`), under its
    /// `maxDuration` if it has one; a restart is a job of its own, tagged with the attempt.
    public static func sbatchOptions(
        workloadID: String, spec: WorkloadSpec, partition: String?, gpuType: String?, directory: String, attempt: Int = 0
    ) -> [String] {
        let r = spec.resources
        let cpus = max(1, r.wholeCPUs)
        let memPerCPU = max(1, (r.memoryMiB + cpus - 1) / cpus)
        var o = [
            "--parsable", "--job-name=canopy-\(workloadID)", "--comment=\(commentPrefix)\(tag(workloadID: workloadID, attempt: attempt))",
            "--ntasks=\(spec.tasks)",
            "--cpus-per-task=\(cpus)", "--mem-per-cpu=\(memPerCPU)M", "--no-requeue", "--chdir=\(directory)", "--output=\(directory)/batch.log",
        ]
        if r.gpus > 0 { o.append("--gpus-per-task=\(gpuType.map { "\($0):" } ?? "")\(r.gpus)") }
        var minutes = spec.maxDurationSeconds.map { ($0 + 59) / 60 }
        if spec.kind == .interactive, let lease = spec.lease?.seconds { minutes = min(minutes ?? Int.max, leaseMinutes(lease)) }
        if let minutes { o.append("--time=\(minutes)") }
        if let partition { o.append("--partition=\(partition)") }
        return o
    }

    /// Whether Slurm's messages in a job's logs say a task was killed for its memory (a step's tasks OOM-killed
    /// leave the job FAILED, not OUT_OF_MEMORY; srun and slurmstepd say so in the logs).
    public static func mentionsOOM(_ log: String) -> Bool {
        log.contains("oom_kill event") || log.contains("Out Of Memory") || log.contains("oom-kill")
    }

    /// Whether sbatch's (or any command's) complaint means Slurm could not be reached, rather than a refusal.
    public static func isUnreachable(_ stderr: String) -> Bool {
        let s = stderr.lowercased()
        return [
            "unable to contact slurm controller", "temporarily unable", "socket timed out", "connection refused", "zero bytes were transmitted",
            "communication connection failure", "slurm_persist_conn", "munge",
        ]
        .contains { s.contains($0) }
    }

    /// The first line of sbatch's complaint without its `sbatch: error:` prefixes.
    public static func complaint(_ stderr: String) -> String {
        let line = stderr.split(separator: "\n").last { !$0.trimmingCharacters(in: .whitespaces).isEmpty }.map(String.init) ?? stderr
        var s = line
        for prefix in ["sbatch: error: ", "squeue: error: ", "sinfo: error: ", "scancel: error: ", "Batch job submission failed: "] {
            if let r = s.range(of: prefix) { s = String(s[r.upperBound...]) }
        }
        return s.trimmingCharacters(in: .whitespaces)
    }
}
