import CanopyApp
import CanopyCore
import CanopyTesting
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A loopback port nobody listens on right now.
func freePort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw CanopyError(.internal, "socket") }
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    addr.sin_port = 0
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &addr) { p in
        p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) == 0 && getsockname(fd, $0, &len) == 0 }
    }
    guard bound else { throw CanopyError(.internal, "bind") }
    return Int(UInt16(bigEndian: addr.sin_port))
}

@Suite("isolation of a live server", .serialized)
struct IsolationLiveTests {
    @Test("a server killed while a task runs starts again on the same port and re-adopts it; the task held none of its sockets")
    func restartWhileTaskRuns() async throws {
        let dir = try makeTempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let port = try freePort()
        let first = try await ServerProcess.start(dataDir: dir, extra: ["--port", String(port)])
        // It lists its shell's descriptors, then runs until the test lets it go: provably running across the restart.
        let (status, body) = try await pythonRequest(
            first.url, "POST", "/api/v1/workloads", token: first.token,
            body: #"{"command": ["sh", "-c", "ls /proc/$$/fd; while [ ! -e go ]; do sleep 0.05; done; echo released"]}"#)
        #expect(status == 201, "\(body)")
        let id = try #require((try JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any])?["id"] as? String)
        let work = "\(dir)/workloads/\(id)/task-0/work"
        // However the test ends, the task is let go, never left waiting.
        defer { FileManager.default.createFile(atPath: work + "/go", contents: nil) }
        let running = await eventually(timeout: .seconds(20)) {
            (try? await pythonRequest(first.url, "GET", "/api/v1/workloads/\(id)", token: first.token).1.contains(#""phase":"Running""#)) ?? false
        }
        #expect(running)
        await first.kill9()

        let second = try await ServerProcess.start(dataDir: dir, extra: ["--port", String(port)])
        do { try await afterRestart(second) } catch {
            await second.terminate()
            throw error
        }
        await second.terminate()

        func afterRestart(_ second: ServerProcess) async throws {
        #expect(second.url.hasSuffix(":\(port)"))
        let (_, adopted) = try await pythonRequest(second.url, "GET", "/api/v1/workloads/\(id)", token: second.token)
        #expect(adopted.contains(#""phase":"Running""#), "\(adopted)")
        #expect(FileManager.default.createFile(atPath: work + "/go", contents: nil))
        var last = ""
        let done = await eventually(timeout: .seconds(20)) {
            last = (try? await pythonRequest(second.url, "GET", "/api/v1/workloads/\(id)", token: second.token).1) ?? ""
            return last.contains(#""phase":"Succeeded""#)
        }
        #expect(done, "\(last)")
        let (_, log) = try await pythonRequest(second.url, "GET", "/api/v1/workloads/\(id)/tasks/0/logs", token: second.token)
        #expect(log.trimmingCharacters(in: .newlines) == "0\n1\n2\nreleased", "descriptors seen by the task: \(log)")
        }
    }

    @Test("the data directory is the server's: traversable only, with its database, credentials and data store private")
    func privateFiles() async throws {
        let config = try testConfiguration()
        let server = try await buildApplication(config)
        _ = server
        func mode(_ path: String) -> mode_t? {
            var st = stat()
            return lstat(path, &st) == 0 ? st.st_mode & 0o777 : nil
        }
        let dir = config.absoluteDataDir
        #expect(mode(dir) == 0o711)
        #expect(mode(dir + "/canopy.sqlite") == 0o600)
        #expect(mode(dir + "/admin.token") == 0o600)
        #expect(mode(dir + "/secret.key") == 0o600)
        #expect(mode(dir + "/data") == 0o700)
        #expect(mode(dir + "/workloads") == 0o711)
        for sidecar in ["-wal", "-shm"] {
            if let m = mode(dir + "/canopy.sqlite" + sidecar) { #expect(m == 0o600, "canopy.sqlite\(sidecar)") }
        }
    }

    @Test("a kill -9 loop under submission load loses no acknowledged workload: 5 rounds")
    func killLoop() async throws {
        let dir = try makeTempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var acked: [String] = []
        for round in 1...5 {
            let server = try await ServerProcess.start(dataDir: dir)
            let (load, out) = try server.startSubmissionLoad()
            // Kill it once the load is well under way: some submissions acknowledged, more in flight.
            let reader = out.fileHandleForReading
            let firstAcks = try await offPool { reader.availableData }
            #expect(!firstAcks.isEmpty, "round \(round): no submission was acknowledged")
            try await Task.sleep(for: .milliseconds(150))
            await server.kill9()
            let rest = try await offPool {
                let data = reader.readDataToEndOfFile()
                load.waitUntilExit()
                return data
            }
            let ids = String(decoding: firstAcks + rest, as: UTF8.self).split(separator: "\n").map(String.init)
            #expect(!ids.isEmpty)
            acked += ids
        }
        try await ServerProcess.with(dataDir: dir) { server in
            let check = try await runProcess(pythonPath, ["-c", checkScript, server.url, server.token], stdin: acked.joined(separator: "\n"))
            #expect(check.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "missing 0", "of \(acked.count) acknowledged: \(check.stdout) \(check.stderr)")
            print("kill -9 loop: \(acked.count) acknowledged over 5 rounds, \(check.stdout.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
    }
}
