import CanopyApp
import CanopyCore
import Foundation
import Hummingbird
import HummingbirdTesting
import NIOCore

/// A fresh data directory under /tmp, world-traversable so tasks that run as the unprivileged user can reach it.
public func makeTempDir(_ prefix: String = "canopy-test") throws -> String {
    let path = "/tmp/\(prefix)-\(UUID().uuidString.prefix(8))"
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
    return path
}

/// The folder SwiftPM builds into (where canopy, canopy-shim and the test bundle live).
public var buildProductsDir: String {
    let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    return (exe as NSString).deletingLastPathComponent
}

/// A server configuration for tests: its own data dir, a declared GPU inventory, a short stop grace.
public func testConfiguration(dataDir: String? = nil, gpus: String = "T4:2", cpus: String = "4", memory: String = "8Gi") throws -> ServerConfiguration {
    var c = ServerConfiguration(environment: [:])
    c.dataDir = try dataDir ?? makeTempDir()
    c.gpus = gpus
    c.cpus = cpus
    c.memory = memory
    c.port = 0
    c.stopGrace = 1
    c.shimPath = buildProductsDir + "/canopy-shim"
    // Tests that do not care about containers run image workloads as processes, as servers did before images.
    c.imagePolicy = "processes"
    c.pullRegistries = ["docker.io", "ghcr.io"]
    return c
}

/// JSON helpers for tests.
public enum TestJSON {
    /// Parses a body as a JSON object.
    public static func object(_ buffer: ByteBuffer) -> [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(buffer.readableBytesView))) as? [String: Any] ?? [:]
    }

    /// A JSON body.
    public static func body(_ object: Any) -> ByteBuffer {
        ByteBuffer(bytes: (try? JSONSerialization.data(withJSONObject: object)) ?? Data())
    }
}

/// Headers with a bearer token and a JSON content type.
public func authHeaders(_ token: String) -> HTTPFields {
    [.authorization: "Bearer \(token)", .contentType: "application/json"]
}

/// Polls `condition` until it holds or `timeout` passes; returns whether it held.
public func eventually(timeout: Duration = .seconds(10), _ condition: () async throws -> Bool) async rethrows -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if try await condition() { return true }
        try? await Task.sleep(for: .milliseconds(20))
    }
    return try await condition()
}

/// Runs blocking work (waiting on a child process, reading a pipe to its end) on a thread of its own.
/// Swift Testing runs tests in parallel on the cooperative pool, which has one thread per core: two tests
/// blocked in `waitUntilExit` on a 2-core machine would starve every other test and the in-process servers.
public func offPool<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread.detachNewThread { continuation.resume(with: Result { try body() }) }
    }
}

/// Runs a program to completion, returning its exit status and output (for CLI and crash tests), off the cooperative pool.
public func runProcess(_ path: String, _ args: [String], env: [String: String] = [:], stdin: String? = nil) async throws -> (status: Int32, stdout: String, stderr: String) {
    try await offPool { try runProcessBlocking(path, args, env: env, stdin: stdin) }
}

/// Runs a program to completion on the calling thread; use `runProcess` from async code.
public func runProcessBlocking(_ path: String, _ args: [String], env: [String: String] = [:], stdin: String? = nil) throws -> (status: Int32, stdout: String, stderr: String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: path)
    p.arguments = args
    var environment = ProcessInfo.processInfo.environment
    for (k, v) in env { environment[k] = v }
    p.environment = environment
    let out = Pipe(), err = Pipe()
    p.standardOutput = out
    p.standardError = err
    let input = stdin.map { _ in Pipe() }
    p.standardInput = input ?? FileHandle.nullDevice
    try p.run()
    if let input, let stdin {
        // Fed from another thread, so a child that writes while it reads cannot dead-lock us.
        let writer = input.fileHandleForWriting
        Thread.detachNewThread {
            writer.write(Data(stdin.utf8))
            try? writer.close()
        }
    }
    let o = out.fileHandleForReading.readDataToEndOfFile()
    let e = err.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self))
}

/// An executor's next reported exit (of `workloadID`, when given), or nil after `timeout`, so a lost exit fails the
/// test instead of hanging the suite.
public func nextExit(of workloadID: String? = nil, _ events: AsyncStream<BackendEvent>, timeout: Duration = .seconds(30)) async -> TaskExit? {
    await withTaskGroup(of: TaskExit?.self) { group in
        group.addTask {
            for await case .exited(let exit) in events where workloadID == nil || exit.workloadID == workloadID { return exit }
            return nil
        }
        group.addTask {
            try? await Task.sleep(for: timeout)
            return nil
        }
        let first = await group.next() ?? nil
        group.cancelAll()
        return first
    }
}
