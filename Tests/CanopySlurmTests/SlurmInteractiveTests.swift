import CanopyCore
import CanopyHost
import CanopyTesting
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

// In the cluster's suite (serialized: its fault test stops slurmctld).
extension SlurmClusterTests {
    /// OpenSSH's client and key tool, which scripts/test.sh installs.
    static let sshReady = FileManager.default.isExecutableFile(atPath: "/usr/bin/ssh") && FileManager.default.isExecutableFile(atPath: "/usr/bin/ssh-keygen")

    @Test(
        "an interactive workload as a Slurm job: its port (picked on the node) through the proxy, exec with pipes and a terminal, ssh, the lease as the job's time limit extended in place, stop and restart with its files",
        .enabled(if: geteuid() == 0 && (SlurmClusterTests.sshReady || Cluster.required), "needs root (the proxy checks who listens) and OpenSSH's client"))
    func interactiveOnSlurm() async throws {
        let keys = try makeTempDir("canopy-slurm-keys")
        defer { try? FileManager.default.removeItem(atPath: keys) }
        let made = try await runProcess("/usr/bin/ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "me", "-f", keys + "/me"])
        #expect(made.status == 0, "\(made)")
        let extra = ["--executor", "slurm", "--slurm-conf", Cluster.conf, "--slurm-poll-interval", "0.3", "--ssh-port", "0"]
        try await ServerProcess.with(dataDir: try makeTempDir("canopy-slurm-interactive"), removeAfter: true, extra: extra) { server in
            // A web server on the port its node gave it, which the task learns from CANOPY_PORT_8000; the proxy keeps
            // its path prefix, so the page is also served under it.
            let run = try await server.cli([
                "run", "-d", "--interactive", "--lease", "30m", "--port", "8000/http", "--cpus", "1", "--memory", "256Mi", "--", "sh", "-c",
                "p=proxy/$CANOPY_WORKLOAD_ID/$CANOPY_TASK_INDEX/8000; mkdir -p $p; echo slurm-page > index.html; cp index.html $p/; "
                    + "exec python3 -m http.server \"$CANOPY_PORT_8000\" --bind 127.0.0.1",
            ])
            #expect(run.status == 0, "\(run)")
            let id = run.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(try await eventually(timeout: Cluster.timeout) { try await server.phase(id) == "Running" })
            let job = try #require(try await Cluster.jobsTagged(id).first)

            // Through the proxy, with the bearer token; another tenant's token finds nothing.
            var url = ""
            #expect(
                try await eventually(timeout: .seconds(20)) {
                    let show = try await server.cli(["show", id, "-o", "json"])
                    let w = (try? JSONSerialization.jsonObject(with: Data(show.stdout.utf8))) as? [String: Any]
                    let endpoints = ((w?["tasks"] as? [[String: Any]])?.first?["endpoints"] as? [[String: Any]]) ?? []
                    url = endpoints.first { $0["port"] as? Int == 8000 }?["url"] as? String ?? ""
                    return !url.isEmpty
                })
            #expect(url.hasSuffix("/proxy/\(id)/0/8000/"), "\(url)")
            let fetch = """
                import sys, urllib.request, urllib.error
                req = urllib.request.Request(sys.argv[1], headers={"Authorization": "Bearer " + sys.argv[2]})
                try:
                    r = urllib.request.urlopen(req, timeout=10); print(r.status); print(r.read().decode())
                except urllib.error.HTTPError as e:
                    print(e.code)
                """
            var page = ""
            #expect(
                try await eventually(timeout: .seconds(30)) {
                    page = try await runProcess("/usr/bin/python3", ["-c", fetch, url + "index.html", server.token]).stdout
                    return page.hasPrefix("200")
                }, "\(page)")
            #expect(page.contains("slurm-page"), "\(page)")
            let stranger = try await server.cli(["tokens", "create", "--user", "mallory", "--tenant", "other"])
            let strangerToken = stranger.stdout.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.first { $0.hasPrefix("cnp_") } ?? ""
            #expect(try await runProcess("/usr/bin/python3", ["-c", fetch, url + "index.html", strangerToken]).stdout.hasPrefix("404"))
            // The port on the node is not the declared one, and is what the task was told.
            let ports = (try? String(contentsOfFile: server.dataDir + "/workloads/\(id)/task-0/ports", encoding: .utf8)) ?? ""
            let actual = try #require(ports.split(separator: " ").last.flatMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) }, "\(ports)")

            // Exec: a step of the job on the task's node, in its directory, with its variables and exit code.
            let exec = try await server.cli(["exec", id, "--", "sh", "-c", "cat index.html; echo $CANOPY_PORT_8000 $CANOPY_NODE; pwd; id -u; echo err >&2; exit 3"])
            let lines = exec.stdout.split(separator: "\n").map(String.init)
            #expect(exec.status == 3, "\(exec)")
            #expect(lines.count == 4 && lines[0] == "slurm-page" && lines[1].hasPrefix("\(actual) n") && lines[2].hasSuffix("/\(id)/task-0/work"), "\(exec)")
            #expect(lines.count == 4 && lines[3] != "0", "never root: \(exec)")
            #expect(exec.stderr.contains("err"), "\(exec)")
            let input = try await server.cli(["exec", "-i", id, "--", "sh", "-c", "wc -l > lines.txt; cat lines.txt"], stdin: (0..<1000).map { "\($0)\n" }.joined())
            #expect(input.status == 0 && input.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "1000", "\(input)")
            // With a terminal (srun --pty): its size, a resize, the shell's exit status.
            let tty = try await runProcess(
                "/usr/bin/python3",
                ["-c", pseudoTerminalDriver, [buildProductsDir + "/canopy", "exec", "-it", id, "--", "sh"].joined(separator: "\u{1f}"), "tty; stty size", "stty size; exit 7"],
                env: ["CANOPY_URL": server.url, "CANOPY_TOKEN": server.token])
            #expect(tty.stdout.contains("/dev/pts/") && tty.stdout.contains("33 101") && tty.stdout.contains("50 120") && tty.stdout.contains("EXIT 7"), "\(tty)")

            // SSH with a registered key: a command, and ssh -L to the task's port.
            if Self.sshReady {
                #expect(try await server.cli(["ssh-keys", "add", keys + "/me.pub"]).status == 0)
                let info = try await server.cli(["ssh-config"])
                let sshPort = info.stdout.split(separator: "\n").compactMap { line -> Int? in
                    let t = line.trimmingCharacters(in: .whitespaces)
                    return t.hasPrefix("Port ") ? Int(t.dropFirst(5)) : nil
                }.first ?? 0
                #expect(sshPort > 0, "\(info)")
                let options = ["-i", keys + "/me", "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-p", String(sshPort)]
                let ssh = try await runProcess("/usr/bin/ssh", options + ["\(id)@127.0.0.1", "cat index.html; exit 5"], env: ["HOME": keys])
                #expect(ssh.status == 5 && ssh.stdout.contains("slurm-page"), "\(ssh)")
            }

            // The lease is the job's time limit (30 minutes and one), and an extension moves it without a restart.
            func timeLimit() async throws -> String {
                let shown = try await Cluster.run(["scontrol", "show", "job", job, "-o"]).stdout
                return shown.split(separator: " ").first { $0.hasPrefix("TimeLimit=") }.map { String($0.dropFirst(10)) } ?? ""
            }
            #expect(try await timeLimit() == "00:31:00")
            let lease = try await server.cli(["lease", id, "+1h"])
            #expect(lease.status == 0, "\(lease)")
            let extended = try await timeLimit()
            #expect(extended.hasPrefix("01:3"), "\(extended)")
            #expect(try await Cluster.jobsTagged(id) == [job], "the same job, not a restart")

            // Stop: Stopped, its files kept; restart: a new job, the same files, a new port picked on its node.
            _ = try await server.cli(["exec", id, "--", "sh", "-c", "echo kept > mine.txt"])
            #expect(try await server.cli(["stop", id]).status == 0)
            #expect(try await eventually(timeout: Cluster.timeout) { try await server.phase(id) == "Stopped" })
            // What the job left for the next start is not believed: a job id file that names no job of this start
            // (here, an option to scancel) is ignored, and the restart submits a job of its own.
            try "--user=nobody\n".write(toFile: server.dataDir + "/workloads/\(id)/job.1.id", atomically: false, encoding: .utf8)
            let restart = try await server.cli(["restart", id])
            #expect(restart.status == 0, "\(restart)")
            #expect(try await eventually(timeout: Cluster.timeout) { try await server.phase(id) == "Running" })
            let again = try await server.cli(["exec", id, "--", "cat", "mine.txt", "index.html"])
            #expect(again.status == 0 && again.stdout == "kept\nslurm-page\n", "\(again)")
            let tagged = try await Cluster.run(["squeue", "-h", "-a", "-t", "all", "-o", "%i|%k"]).stdout
            #expect(tagged.contains("|canopy:\(id)#1"), "the restart is a job of its own, tagged with its attempt: \(tagged)")
            #expect(
                try await eventually(timeout: .seconds(30)) {
                    try await runProcess("/usr/bin/python3", ["-c", fetch, url + "index.html", server.token]).stdout.hasPrefix("200")
                })
            #expect(try await server.cli(["stop", id]).status == 0)
            #expect(try await eventually(timeout: Cluster.timeout) { try await server.phase(id) == "Stopped" })
            #expect(try await server.cli(["rm", id]).status == 0)

            // An app on Slurm: JupyterLab on the port its node gave it ({port} filled in by the task), its secret
            // through sbatch's environment, reached through the proxy.
            let venv = "/opt/canopy-test/jupyter"
            if FileManager.default.isExecutableFile(atPath: venv + "/bin/jupyter") {
                let jupyter = try await server.cli(["jupyter", "--env", "PATH=\(venv)/bin:/usr/bin:/bin", "--memory", "2Gi", "--cpus", "1"])
                #expect(jupyter.status == 0, "\(jupyter)")
                let lines = jupyter.stdout.split(separator: "\n").map(String.init)
                let lab = lines.first ?? ""
                let labURL = lines.first { $0.hasPrefix("url:") }.map { $0.dropFirst(4).trimmingCharacters(in: .whitespaces) } ?? ""
                let status = try await runProcess("/usr/bin/python3", ["-c", fetch, labURL + "api/status", server.token]).stdout
                #expect(status.hasPrefix("200") && status.contains("started"), "\(status)")
                let script = (try? String(contentsOfFile: server.dataDir + "/workloads/\(lab)/job.sh", encoding: .utf8)) ?? ""
                #expect(!script.isEmpty && !script.contains("JUPYTER_TOKEN"), "the app's secret is in no file")
                #expect(try await server.cli(["stop", lab]).status == 0)
                #expect(try await eventually(timeout: Cluster.timeout) { try await server.phase(lab) == "Stopped" })
            }
        }
    }
}
