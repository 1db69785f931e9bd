import CanopyCore
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// The images' root file systems, unpacked where a scheduling backend's nodes read them (a backend without a container
/// engine on its nodes runs each task of an image workload in one; see `ImageEngine.exportFilesystem`).
///
/// One directory per image id under `root` (`ID-HEX/rootfs` and `ID-HEX/env.json`): ids name content, so a
/// directory, once there, is never stale, and every workload of that image shares it. A directory appears whole or
/// not at all: the engine writes into a private staging directory, renamed into place when complete. Concurrent
/// requests for one image share one export.
public actor ImageFilesystems {
    /// Where the directories go; on storage the nodes share (the data dir, which such a backend requires shared).
    public nonisolated let root: String
    private let engine: any ImageEngine
    private var inFlight: [String: Task<PreparedImage, any Error>] = [:]

    /// Creates the store; `root` is created (0711: the nodes' jobs traverse it, nobody lists it).
    public init(root: String, engine: any ImageEngine) throws {
        self.root = root
        self.engine = engine
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        chmod(root, 0o711)
    }

    /// The image `id`'s root file system, exported from the engine the first time it is asked for.
    public func prepare(_ id: String) async throws -> PreparedImage {
        let hex = try Self.directoryName(id)
        let directory = root + "/" + hex
        if let ready = Self.read(id: id, directory: directory) { return ready }
        if let running = inFlight[hex] { return try await running.value }
        let engine = engine
        let root = root
        // Off the actor: unpacking and removing trees take a while, and other images' exports must not wait.
        let task = Task<PreparedImage, any Error>.detached {
            // A directory without its env.json is one an earlier export or a hand left incomplete: it goes.
            if FileManager.default.fileExists(atPath: directory) {
                let aside = root + "/.staging-broken-" + hex + "-" + UUID().uuidString.prefix(8).lowercased()
                if rename(directory, aside) == 0 { Self.remove(aside) }
            }
            let staging = root + "/.staging-" + hex + "-" + UUID().uuidString.prefix(8).lowercased()
            guard mkdir(staging, 0o700) == 0 else { throw CanopyError(.internal, "cannot create \(staging): \(String(cString: strerror(errno)))") }
            do {
                let env = try await engine.exportFilesystem(id, into: staging + "/rootfs")
                try JSONEncoder().encode(env).write(to: URL(fileURLWithPath: staging + "/env.json"))
                // Readable by the jobs from here on: the root file system keeps the image's own modes, owned by root.
                chmod(staging + "/rootfs", 0o755)
                chmod(staging + "/env.json", 0o644)
                chmod(staging, 0o755)
                if rename(staging, directory) != 0 {
                    // Another server process (or an earlier try) got there first: its copy is as good.
                    guard errno == EEXIST || errno == ENOTEMPTY else { throw CanopyError(.internal, "cannot move \(staging) into place") }
                    Self.remove(staging)
                }
            } catch {
                Self.remove(staging)
                throw error
            }
            guard let ready = Self.read(id: id, directory: directory) else { throw CanopyError(.internal, "image \(id) was exported but cannot be read back") }
            return ready
        }
        inFlight[hex] = task
        defer { inFlight[hex] = nil }
        return try await task.value
    }

    /// Removes what earlier, interrupted exports left.
    public func removeLeftovers() {
        for name in (try? FileManager.default.contentsOfDirectory(atPath: root)) ?? [] where name.hasPrefix(".staging-") {
            Self.remove(root + "/" + name)
        }
    }

    /// The directory name for an image id: its hex digest, nothing else (an id comes from the engine, but is checked
    /// as if it did not).
    static func directoryName(_ id: String) throws -> String {
        let hex = id.hasPrefix("sha256:") ? String(id.dropFirst("sha256:".count)) : id
        guard hex.count == 64, hex.allSatisfy({ $0.isHexDigit && !$0.isUppercase }) else {
            throw CanopyError(.internal, "\(id) is not an image id")
        }
        return hex
    }

    private static func read(id: String, directory: String) -> PreparedImage? {
        guard let data = FileManager.default.contents(atPath: directory + "/env.json"), let env = try? JSONDecoder().decode([String].self, from: data) else {
            return nil
        }
        return PreparedImage(id: id, rootfs: directory + "/rootfs", env: env)
    }

    private static func remove(_ path: String) {
        // The unpacked tree is the server's own (root-owned, links never followed by removal).
        try? FileManager.default.removeItem(atPath: path)
    }
}
