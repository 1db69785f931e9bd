import CanopyCore
import Foundation
import Synchronization

/// An in-memory `ImageEngine` for tests of the image catalog and of submission: it keeps references and images in
/// a dictionary, as a Docker engine's one global namespace does, and never reads more than a file's size and first
/// bytes. The real engine adapter (`CanopyDocker`) is tested against a real dockerd elsewhere; this fake only has
/// to keep the engine's rules the catalog relies on: a tag (or a load) moves a name, a name names one image, an image
/// a moved name left stays (dangling) until removed, an untag removes the image once nothing names it, and a tag's
/// source may be a reference or an image id.
public final class FakeImageEngine: ImageEngine {
    struct State {
        var images: [String: EngineImage] = [:]
        var references: [String: String] = [:]
        var calls: [String] = []
        var counter = 0
    }
    private let state = Mutex(State())
    /// What `load` answers for the next archive: the references an archive names (a fresh image each, or an
    /// existing id when the reference already names one in `archiveIDs`).
    public let archiveReferences = Mutex<[String]>(["busybox:1.36"])
    /// Progress lines a pull reports.
    public let pullProgress = ["Pulling from library/busybox", "Digest: sha256:0123", "Status: Downloaded newer image"]
    /// References a pull refuses, as a registry without them would.
    public let unknownRemote = Mutex<Set<String>>(["nosuch/image:1"])

    /// An empty engine.
    public init() {}

    /// Every call made, in order (`import canopy/...`, `tag ...`), for tests that check what reached the engine.
    public var calls: [String] { state.withLock { $0.calls } }
    /// The references the engine holds, sorted.
    public var references: [String] { state.withLock { $0.references.keys.sorted() } }
    /// The image a reference names now.
    public func imageID(_ reference: String) -> String? { state.withLock { $0.references[reference] } }

    func newImage(_ s: inout State, size: Int64) -> EngineImage {
        s.counter += 1
        let id = "sha256:" + String(repeating: String(format: "%02x", s.counter % 256), count: 32)
        let image = EngineImage(id: id, sizeBytes: size)
        s.images[id] = image
        return image
    }

    func name(_ s: inout State, _ reference: String, _ id: String) {
        s.references[reference] = id
    }

    /// Drops an image once nothing names it (as `docker rmi` of its last name).
    func collect(_ s: inout State, _ id: String) {
        if !s.references.values.contains(id) { s.images.removeValue(forKey: id) }
    }

    static func size(_ file: String) throws -> Int64 {
        guard let attributes = try? FileManager.default.attributesOfItem(atPath: file), let n = attributes[.size] as? NSNumber else {
            throw CanopyError(.invalidArgument, "no such file \(file)")
        }
        return n.int64Value
    }

    public func importRootfs(file: String, as reference: String) async throws -> EngineImage {
        let size = try Self.size(file)
        return state.withLock { s in
            s.calls.append("import \(reference)")
            let image = newImage(&s, size: size)
            name(&s, reference, image.id)
            return image
        }
    }

    public func archiveReferences(file: String) async throws -> [String] { archiveReferences.withLock { $0 } }

    public func load(file: String) async throws -> [(reference: String, image: EngineImage)] {
        let size = try Self.size(file)
        let refs = archiveReferences.withLock { $0 }
        return state.withLock { s in
            s.calls.append("load \(refs.joined(separator: ","))")
            return refs.map { ref in
                let image = newImage(&s, size: size)
                name(&s, ref, image.id)
                return (ref, image)
            }
        }
    }

    public func pull(_ reference: String, progress: @escaping @Sendable (String) -> Void) async throws -> EngineImage {
        if unknownRemote.withLock({ $0.contains(reference) }) {
            throw CanopyError(.notFound, "pull access denied for \(reference): repository does not exist", field: "reference")
        }
        for line in pullProgress { progress(line) }
        return state.withLock { s in
            s.calls.append("pull \(reference)")
            let image = newImage(&s, size: 4_000_000)
            name(&s, reference, image.id)
            return image
        }
    }

    public func tag(_ source: String, as reference: String) async throws {
        try state.withLock { s in
            s.calls.append("tag \(source) \(reference)")
            guard let id = s.images[source]?.id ?? s.references[source] else { throw CanopyError(.notFound, "no such image: \(source)") }
            name(&s, reference, id)
        }
    }

    public func inspect(_ reference: String) async throws -> EngineImage? {
        state.withLock { s in s.references[reference].flatMap { s.images[$0] } ?? s.images[reference] }
    }

    public func allReferences() async throws -> [String: String] { state.withLock { $0.references } }

    /// Writes a root file system of one file, `image-id`, holding the image's id (the real export is tested against
    /// dockerd); the environment is `PATH=/fake/bin`.
    public func exportFilesystem(_ reference: String, into directory: String) async throws -> [String] {
        let id = try state.withLock { s -> String in
            s.calls.append("export \(reference)")
            guard let id = s.images[reference] != nil ? reference : s.references[reference] else { throw CanopyError(.notFound, "no such image: \(reference)") }
            return id
        }
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o700])
        try id.write(toFile: directory + "/image-id", atomically: false, encoding: .utf8)
        return ["PATH=/fake/bin"]
    }

    public func untag(_ reference: String) async throws {
        try state.withLock { s in
            s.calls.append("untag \(reference)")
            guard let id = s.references.removeValue(forKey: reference) else { throw CanopyError(.notFound, "no such image: \(reference)") }
            collect(&s, id)
        }
    }
}
