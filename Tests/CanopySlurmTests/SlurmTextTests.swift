import CanopyCore
import CanopyHost
import CanopyTesting
import Foundation
import Testing

@testable import CanopySlurm

/// What Canopy reads from Slurm's commands; the texts are what Slurm 22.05 printed on the test cluster.
@Suite("Slurm command texts")
struct SlurmTextTests {
    @Test("squeue lines: seven fields, the comment last and kept whole, short lines skipped")
    func squeueLines() {
        let text = """
            12|PENDING|Resources||2026-11-22T10:00:05|N/A|canopy:abc
            13|RUNNING|None|n[1-3]|2026-11-22T10:00:01|2026-11-22T11:00:01|canopy:def
            14|COMPLETED|None|n2|2026-11-22T10:00:01|2026-11-22T10:00:02|(null)
            garbage
            """
        let jobs = SlurmText.jobs(Data(text.utf8))
        #expect(jobs.count == 3)
        #expect(jobs[0].workloadID == "abc" && jobs[0].reason == "Resources" && jobs[0].nodes.isEmpty)
        #expect(jobs[1].state == "RUNNING" && SlurmText.hostnames(jobs[1].nodes) == ["n1", "n2", "n3"])
        #expect(jobs[2].workloadID == nil)
        #expect(SlurmText.date(jobs[1].start) != nil && SlurmText.date("N/A") == nil)
    }

    @Test("pending reasons become typed Canopy reasons, Slurm's word kept in the message")
    func pendingReasons() {
        let cases: [(String, Reason.Code)] = [
            ("Resources", .insufficientResources), ("Priority", .queued), ("ReqNodeNotAvail, UnavailableNodes:n1", .nodesUnavailable),
            ("PartitionDown", .nodesUnavailable), ("QOSMaxJobsPerUserLimit", .quotaExceeded), ("AssocGrpGRES", .quotaExceeded),
            ("JobHeldUser", .held), ("Dependency", .waitingForDependency), ("None", .queued), ("SomethingNew", .queued),
        ]
        for (raw, code) in cases {
            let r = SlurmText.pendingReason(raw, jobID: "7")
            #expect(r.code == code, "\(raw)")
            #expect(r.message.contains(raw) && r.message.contains("7"))
        }
    }

    @Test("end states become typed failure reasons; COMPLETED and FAILED leave it to the exit codes")
    func endReasons() {
        #expect(SlurmText.endReason(state: "OUT_OF_MEMORY", jobID: "1", nodes: "n1")?.code == .outOfMemory)
        #expect(SlurmText.endReason(state: "TIMEOUT", jobID: "1", nodes: "n1")?.code == .maxDurationExceeded)
        #expect(SlurmText.endReason(state: "NODE_FAIL", jobID: "1", nodes: "n1")?.code == .nodeFailure)
        #expect(SlurmText.endReason(state: "PREEMPTED", jobID: "1", nodes: "n1")?.code == .preempted)
        #expect(SlurmText.endReason(state: "CANCELLED", jobID: "1", nodes: "n1")?.code == .cancelledInBackend)
        #expect(SlurmText.endReason(state: "COMPLETED", jobID: "1", nodes: "n1") == nil)
        #expect(SlurmText.endReason(state: "FAILED", jobID: "1", nodes: "n1") == nil)
        #expect(SlurmText.isTerminal("OUT_OF_MEMORY") && !SlurmText.isTerminal("RUNNING") && SlurmText.hasStarted("COMPLETING"))
    }

    @Test("sinfo: nodes per partition with CPUs, memory, GPUs from GRES and what is allocated")
    func sinfoNodes() {
        let text = """
            n1|debug*|2|1/1/0/2|4096|1024|gpu:fake:2|gpu:fake:1(IDX:1)|mixed|
            n1|one|2|1/1/0/2|4096|1024|gpu:fake:2|gpu:fake:1(IDX:1)|mixed|
            n2|debug*|8|0/0/8/8|64000|0|gpu:a100:4(S:0-1),gpu:t4:1|gpu:a100:0(IDX:N/A),gpu:t4:0(IDX:N/A)|idle+drain|
            n3|debug*|2|0/0/2/2|4096|0|(null)|gpu:0|down*|
            """
        let views = SlurmText.nodes(text)
        #expect(views.count == 4)
        #expect(views[0].node.pool == "debug" && views[1].node.pool == "one")
        #expect(views[0].node.cpuMillis == 2000 && views[0].allocatedCPUMillis == 1000 && views[0].allocatedMemoryMiB == 1024)
        #expect(views[0].node.gpus.map(\.model) == ["fake", "fake"] && views[0].allocatedGPUs == [1])
        #expect(views[2].node.gpus.count == 5 && views[2].node.gpuCount(model: "A100") == 4 && views[2].node.state == .drained)
        #expect(views[3].node.state == .down && views[3].node.gpus.isEmpty)
        #expect(SlurmText.nodeState("allocated+drain") == .draining && SlurmText.nodeState("idle") == .ready)
        #expect(SlurmText.nodeState("mixed") == .ready && SlurmText.nodeState("idle*") == .down)
    }

    @Test("host lists expand with ranges, lists and zero padding")
    func hostlists() {
        #expect(SlurmText.hostnames("gpu[01-03,7],login") == ["gpu01", "gpu02", "gpu03", "gpu7", "login"])
        #expect(SlurmText.hostnames("") == [])
    }

    @Test("sbatch options: one job, a task per Canopy task, per-task CPUs, memory and typed GPUs, minutes, partition")
    func sbatchOptions() {
        let spec = WorkloadSpec(
            command: ["x"], resources: Resources(cpuMillis: 1500, memoryMiB: 3000, gpus: 2, gpuModel: "A100"), tasks: 4, maxDurationSeconds: 61)
        let o = SlurmText.sbatchOptions(workloadID: "w1", spec: spec, partition: "gpu", gpuType: "a100", directory: "/d/w1")
        for expected in [
            "--ntasks=4", "--cpus-per-task=2", "--mem-per-cpu=1500M", "--gpus-per-task=a100:2", "--time=2", "--partition=gpu", "--comment=canopy:w1",
            "--job-name=canopy-w1", "--no-requeue",
        ] {
            #expect(o.contains(expected), "\(expected)")
        }
    }

    @Test("the batch script quotes every argument and variable for /bin/sh, and the shell runs them unchanged")
    func batchScriptQuoting() async throws {
        let spec = WorkloadSpec(command: ["printf", "%s|", "it's", "$HOME", "a b"], env: ["X": "'; rm -rf / #"])
        let script = SlurmText.batchScript(workloadID: "w", directory: "/tmp/d", workdir: "", spec: spec, extraEnv: [:])
        #expect(script.contains("export X=''\\''; rm -rf / #'"))
        #expect(script.contains("'printf' '%s|' 'it'\\''s' '$HOME' 'a b'"))
        let out = try await runProcess("/bin/sh", ["-c", "printf '%s\\n' " + spec.command.dropFirst().map(SlurmText.shellQuote).joined(separator: " ")])
        #expect(out.stdout == "%s|\nit's\n$HOME\na b\n")
    }

    @Test("an image task's sandbox: image env under the workload's, links recreated, binds quoted, root only when allowed")
    func sandboxText() {
        let sandbox = SlurmText.ImageSandbox(
            rootfs: "/data/images/fs/ab/rootfs", entries: [.init(name: "usr", kind: .directory), .init(name: "bin", kind: .link("usr/bin")), .init(name: "it's", kind: .directory)],
            tmpfs: ["var/tmp"], env: ["PATH=/opt/conda/bin:/usr/bin", "GREETING=image", "HOME=/root", "CANOPY_TASK_INDEX=9", "=x", "NOEQUALS"],
            mounts: [ResolvedMount(hostPath: "/srv/shared data", target: "/data", readOnly: true)], asRoot: false)
        let spec = WorkloadSpec(command: ["python", "train.py"], env: ["GREETING": "spec"])
        let script = SlurmText.batchScript(workloadID: "w", directory: "/tmp/d", workdir: "", spec: spec, extraEnv: [:], sandbox: sandbox)
        #expect(script.contains("--setenv '\\''PATH'\\'' '\\''/opt/conda/bin:/usr/bin'\\''"), "\(script)")
        #expect(!script.contains("GREETING'\\'' '\\''image"), "the workload's env wins over the image's")
        #expect(script.contains("--setenv '\\''GREETING'\\'' '\\''spec'\\''"), "the workload's env is the sandbox's")
        #expect(!script.contains("export GREETING"), "and not the node shell's, around the sandbox")
        #expect(!script.contains("HOME'\\'' '\\''/root") && !script.contains("CANOPY_TASK_INDEX'\\'' '\\''9"), "HOME and CANOPY_ variables are Canopy's")
        #expect(script.contains("--symlink '\\''usr/bin'\\'' '\\''/bin'\\''"))
        #expect(script.contains("--ro-bind '\\''/srv/shared data'\\'' '\\''/data'\\''"))
        #expect(script.contains("--cap-drop ALL") && !script.contains("--uid 0"))
        var root = sandbox
        root.asRoot = true
        let rootScript = SlurmText.batchScript(workloadID: "w", directory: "/tmp/d", workdir: "", spec: spec, extraEnv: [:], sandbox: root)
        #expect(rootScript.contains("--uid 0 --gid 0") && !rootScript.contains("--cap-drop"))
    }

    @Test(
        "the batch script runs an image task in a real bubblewrap sandbox: its own root, /workspace, the exit status recorded",
        .enabled(if: TaskUser.findProgram("bwrap", path: "/usr/bin:/bin") != nil || Cluster.required, "needs bwrap (scripts/test.sh installs it)"))
    func sandboxRuns() async throws {
        let dir = try makeTempDir("canopy-sandbox")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        chmod(dir, 0o755)
        let rootfs = dir + "/rootfs"
        try FileManager.default.createDirectory(atPath: rootfs + "/usr/bin", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: rootfs + "/etc", withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: try #require(TaskUser.findProgram("busybox", path: "/usr/bin:/bin")), toPath: rootfs + "/usr/bin/busybox")
        try FileManager.default.createSymbolicLink(atPath: rootfs + "/usr/bin/sh", withDestinationPath: "busybox")
        try FileManager.default.createSymbolicLink(atPath: rootfs + "/bin", withDestinationPath: "usr/bin")
        try "image\n".write(toFile: rootfs + "/etc/marker", atomically: true, encoding: .utf8)
        let entries = try RootFilesystem.topLevel(of: rootfs)
        #expect(Set(entries.map(\.name)) == ["usr", "etc", "bin"])
        let sandbox = SlurmText.ImageSandbox(rootfs: rootfs, entries: entries, tmpfs: [], env: ["PATH=/usr/bin"], mounts: [], asRoot: false)
        let spec = WorkloadSpec(command: ["sh", "-c", "cat /etc/marker; pwd; echo $PATH; [ -e /etc/debian_version ] || echo no-host-files; echo made > out; exit 4"])
        try FileManager.default.createDirectory(atPath: dir + "/w/task-0/work", withIntermediateDirectories: true)
        let script = SlurmText.batchScript(workloadID: "w", directory: dir + "/w", workdir: "", spec: spec, extraEnv: [:], sandbox: sandbox)
        try script.write(toFile: dir + "/job.sh", atomically: true, encoding: .utf8)
        // The busybox copy was just written: a process another test forks meanwhile may still hold it open for
        // writing ("Text file busy"), which says nothing of the sandbox; that is waited out.
        var r = try await runProcess("/bin/sh", [dir + "/job.sh"], env: ["SLURM_JOB_ID": "1", "SLURMD_NODENAME": "n1", "PATH": "/usr/bin:/bin"])
        var err = (try? String(contentsOfFile: dir + "/w/task-0/stderr.log", encoding: .utf8)) ?? ""
        for _ in 0..<5 where r.status != 4 && err.contains("Text file busy") {
            try await Task.sleep(for: .milliseconds(200))
            try? FileManager.default.removeItem(atPath: dir + "/w/task-0/stderr.log")
            r = try await runProcess("/bin/sh", [dir + "/job.sh"], env: ["SLURM_JOB_ID": "1", "SLURMD_NODENAME": "n1", "PATH": "/usr/bin:/bin"])
            err = (try? String(contentsOfFile: dir + "/w/task-0/stderr.log", encoding: .utf8)) ?? ""
        }
        #expect(r.status == 4, "\(r)")
        let out = (try? String(contentsOfFile: dir + "/w/task-0/stdout.log", encoding: .utf8)) ?? ""
        #expect(out == "image\n/workspace\n/usr/bin\nno-host-files\n", "\(out) \(err)")
        #expect((try? String(contentsOfFile: dir + "/w/task-0/exit", encoding: .utf8)) == "exit 4\n")
        #expect((try? String(contentsOfFile: dir + "/w/task-0/work/out", encoding: .utf8)) == "made\n")

        // An exec into that task: the same image, the same /workspace, its own sandbox; its status is the command's.
        let exec = SlurmText.execScript(workloadID: "w", spec: spec, extraEnv: [:], sandbox: sandbox)
        try exec.write(toFile: dir + "/exec.sh", atomically: true, encoding: .utf8)
        let e = try await runProcess(
            "/bin/sh", [dir + "/exec.sh", dir + "/w", "0", "", "sh", "-c", "cat /etc/marker; pwd; cat out; exit 6"],
            env: ["SLURMD_NODENAME": "n1", "PATH": "/usr/bin:/bin"])
        #expect(e.status == 6 && e.stdout == "image\n/workspace\nmade\n", "\(e)")
        let left = (try? FileManager.default.contentsOfDirectory(atPath: dir + "/w/task-0")) ?? []
        #expect(!left.contains { $0.hasPrefix("exec.") }, "the exec's info file is removed: \(left)")
    }

    @Test("unreachable controller versus refusal")
    func complaints() {
        let down = "sbatch: error: Batch job submission failed: Unable to contact slurm controller (connect failure)\n"
        #expect(SlurmText.isUnreachable(down))
        let refused = "sbatch: error: Batch job submission failed: Requested node configuration is not available\n"
        #expect(!SlurmText.isUnreachable(refused))
        #expect(SlurmText.complaint(refused) == "Requested node configuration is not available")
    }
}

@Suite("Slurm text for interactive workloads")
struct SlurmInteractiveTextTests {
    @Test("tags and job id files per start; ports files read strictly; node names; lease minutes; the lease as --time")
    func tagsAndLimits() {
        #expect(SlurmText.tag(workloadID: "w1", attempt: 0) == "w1" && SlurmText.tag(workloadID: "w1", attempt: 2) == "w1#2")
        #expect(SlurmText.jobIDFile(attempt: 0) == "job.id" && SlurmText.jobIDFile(attempt: 3) == "job.3.id")
        let job = SlurmText.Job(id: "5", state: "RUNNING", reason: "None", nodes: "n1", start: "", end: "", comment: "canopy:w1#2")
        #expect(job.workloadID == "w1" && job.tag == "w1#2")
        #expect(SlurmText.portMap("8888 40001\n6006 40002\nbad line\n0 5\n22 70000\n1 2 3\n") == [8888: 40001, 6006: 40002])
        #expect(SlurmText.isNodeName("n1") && SlurmText.isNodeName("gpu-01.cluster") && !SlurmText.isNodeName("") && !SlurmText.isNodeName("n1;rm"))
        #expect(SlurmText.leaseMinutes(1800) == 31 && SlurmText.leaseMinutes(1) == 2)
        var spec = WorkloadSpec(kind: .interactive, command: ["x"])
        spec.lease = .seconds(7200)
        #expect(SlurmText.sbatchOptions(workloadID: "w", spec: spec, partition: nil, gpuType: nil, directory: "/d").contains("--time=121"))
        spec.maxDurationSeconds = 600
        #expect(SlurmText.sbatchOptions(workloadID: "w", spec: spec, partition: nil, gpuType: nil, directory: "/d").contains("--time=10"))
        spec.lease = .unlimited
        spec.maxDurationSeconds = nil
        #expect(!SlurmText.sbatchOptions(workloadID: "w", spec: spec, partition: nil, gpuType: nil, directory: "/d", attempt: 1).contains { $0.hasPrefix("--time") })
        #expect(SlurmText.sbatchOptions(workloadID: "w", spec: spec, partition: nil, gpuType: nil, directory: "/d", attempt: 1).contains("--comment=canopy:w#1"))
    }

    @Test("a task picks a free port of its node per declared port, reports it with its node, fills an app's {port} and {task}; exec.sh runs a command with the task's variables")
    func portsAndExecScript() async throws {
        let dir = try makeTempDir("canopy-slurm-ports")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.createDirectory(atPath: dir + "/w/task-0/work", withIntermediateDirectories: true)
        let spec = WorkloadSpec(
            kind: .interactive, command: ["sh", "-c", "echo \"$CANOPY_PORT_8888 $CANOPY_PORT_6006 $1\"", "sh", "--port={port} --base=/proxy/w/{task}/8888/"],
            env: ["GREETING": "hi"], ports: [PortSpec(8888, .http), PortSpec(6006, .http)])
        let script = SlurmText.batchScript(workloadID: "w", directory: dir + "/w", workdir: "", spec: spec, extraEnv: [:], attempt: 1, taskPlaceholders: true)
        try script.write(toFile: dir + "/job.sh", atomically: true, encoding: .utf8)
        let r = try await runProcess("/bin/sh", [dir + "/job.sh"], env: ["SLURM_JOB_ID": "77", "SLURMD_NODENAME": "n2", "PATH": "/usr/bin:/bin"])
        #expect(r.status == 0, "\(r)")
        #expect((try? String(contentsOfFile: dir + "/w/job.1.id", encoding: .utf8)) == "77\n")
        #expect((try? String(contentsOfFile: dir + "/w/task-0/node", encoding: .utf8)) == "n2\n")
        let map = SlurmText.portMap((try? String(contentsOfFile: dir + "/w/task-0/ports", encoding: .utf8)) ?? "")
        let a = try #require(map[8888]), b = try #require(map[6006])
        #expect(a != b && (20000..<32000).contains(a) && (20000..<32000).contains(b), "below the kernel's ephemeral ports")
        #expect(ListeningSockets.on(port: a).isEmpty)
        let out = (try? String(contentsOfFile: dir + "/w/task-0/stdout.log", encoding: .utf8)) ?? ""
        #expect(out == "\(a) \(b) --port=\(a) --base=/proxy/w/0/8888/\n", "\(out)")

        let exec = SlurmText.execScript(workloadID: "w", spec: spec, extraEnv: [:])
        try exec.write(toFile: dir + "/exec.sh", atomically: true, encoding: .utf8)
        let e = try await runProcess(
            "/bin/sh", [dir + "/exec.sh", dir + "/w", "0", "", "sh", "-c", "echo $GREETING $CANOPY_TASK_INDEX $CANOPY_PORT_6006 $CANOPY_WORKLOAD_ID; pwd; exit 9"],
            env: ["SLURMD_NODENAME": "n2", "PATH": "/usr/bin:/bin"])
        #expect(e.status == 9 && e.stdout == "hi 0 \(b) w\n\(dir)/w/task-0/work\n", "\(e)")
    }
}

@Suite("what a Slurm job leaves in its directory, read and reused without trusting it")
struct SlurmJobFilesTests {
    @Test("a restart refuses a task directory the job turned into a link (nothing at its target changes); small files are read only as regular files, bounded, never through links or FIFOs")
    func hostileJobFiles() throws {
        let root = try makeTempDir("canopy-slurm-files")
        defer { try? FileManager.default.removeItem(atPath: root) }
        let victim = root + "/victim"
        try FileManager.default.createDirectory(atPath: victim, withIntermediateDirectories: true)
        chmod(victim, 0o755)
        try FileManager.default.createDirectory(atPath: root + "/w", withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: root + "/w/task-0", withDestinationPath: victim)
        let layout = TaskLayout(root: root, workloadID: "w", index: 0)
        let dir = try FileTree.openDirectory(root + "/w")
        #expect(throws: (any Error).self) { try layout.prepareForJob(in: dir, workdir: nil, inputs: [], owner: (65534, 65534)) }
        var st = stat()
        #expect(stat(victim, &st) == 0 && st.st_uid == 0 && st.st_mode & 0o777 == 0o755 && !FileManager.default.fileExists(atPath: victim + "/work"))

        try FileManager.default.removeItem(atPath: root + "/w/task-0")
        try layout.prepareForJob(in: dir, workdir: "a/b", inputs: [], owner: nil)
        #expect(FileManager.default.fileExists(atPath: root + "/w/task-0/work/a/b"))
        // node: a link to a file outside, a FIFO, a huge sparse file; job.id likewise.
        try "secret\n".write(toFile: victim + "/secret", atomically: true, encoding: .utf8)
        try FileManager.default.createSymbolicLink(atPath: root + "/w/task-0/node", withDestinationPath: victim + "/secret")
        #expect(layout.readSmall("node") == nil)
        mkfifo(root + "/w/task-0/ports", 0o600)
        #expect(layout.readSmall("ports") == nil)
        let fd = open(root + "/w/task-0/exit", O_WRONLY | O_CREAT, 0o600)
        ftruncate(fd, 1 << 30)
        close(fd)
        #expect(layout.readSmall("exit")?.utf8.count == 4096)
        #expect(layout.readExit() == nil)
        try FileManager.default.createSymbolicLink(atPath: root + "/w/job.1.id", withDestinationPath: victim + "/secret")
        #expect(WorkloadDirectory.readSmall(root: root, workloadID: "w", name: "job.1.id") == nil)
        try "42\n".write(toFile: root + "/w/job.2.id", atomically: true, encoding: .utf8)
        #expect(WorkloadDirectory.readSmall(root: root, workloadID: "w", name: "job.2.id") == "42\n")
    }
}
