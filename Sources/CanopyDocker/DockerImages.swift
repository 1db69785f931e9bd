import AsyncHTTPClient
import CanopyCore
import CanopyHost
import Foundation
import NIOCore
import NIOHTTP1
import NIOFoundationCompat
import NIOPosix

/// The image side of the Docker Engine API: import, load, pull, tag, inspect and remove.
public struct DockerImages: ImageEngine {
    /// The engine.
    public let engine: DockerEngine

    /// Creates the adapter.
    public init(engine: DockerEngine) { self.engine = engine }

    /// Streams a file as a request body, read a chunk at a time as the engine takes it (never whole, never ahead).
    private static func fileBody(_ path: String) throws -> (HTTPClientRequest.Body, Int64) {
        let size = (try FileManager.default.attributesOfItem(atPath: path)[.size] as? NSNumber)?.int64Value ?? 0
        guard let handle = FileHandle(forReadingAtPath: path) else { throw CanopyError(.invalidArgument, "cannot read \(path)") }
        return (.stream(FileChunks(handle: handle), length: .known(size)), size)
    }

    /// Reads the engine's progress stream (one JSON document per line); returns the documents, throwing on an error one.
    private func progress(_ response: HTTPClientResponse, _ each: (ProgressLine) -> Void) async throws {
        guard response.status.code < 300 else {
            let body = try await response.body.collect(upTo: 1 << 20)
            try DockerEngine.check(Int(response.status.code), body)
            return
        }
        var lines = LineSplitter()
        for try await chunk in response.body {
            for line in lines.feed(chunk) {
                guard let p = try? JSONDecoder().decode(ProgressLine.self, from: Data(line)) else { continue }
                if let error = p.error ?? p.errorDetail?.message {
                    throw DockerEngine.EngineError(status: 500, message: error)
                }
                each(p)
            }
        }
    }

    public func importRootfs(file: String, as reference: String) async throws -> EngineImage {
        let (repo, tag) = Self.split(reference)
        let (body, _) = try Self.fileBody(file)
        let response = try await engine.stream(
            "/images/create", query: [("fromSrc", "-"), ("repo", repo), ("tag", tag)], method: .POST, body: body, contentType: "application/x-tar")
        try await progress(response) { _ in }
        guard let image = try await inspect(reference) else {
            throw CanopyError(.invalidArgument, "the container engine did not create an image from that file (is it a tar archive of a root file system?)")
        }
        return image
    }

    public func archiveReferences(file: String) async throws -> [String] {
        try ImageArchive.references(in: file)
    }

    public func load(file: String) async throws -> [(reference: String, image: EngineImage)] {
        let (body, _) = try Self.fileBody(file)
        let response = try await engine.stream("/images/load", query: [("quiet", "1")], method: .POST, body: body, contentType: "application/x-tar")
        var loaded: [String] = []
        try await progress(response) { p in
            // "Loaded image: busybox:1.36" or "Loaded image ID: sha256:..."
            if let s = p.stream, let r = s.range(of: "Loaded image: ") {
                loaded.append(s[r.upperBound...].trimmingCharacters(in: .whitespacesAndNewlines))
            } else if let s = p.stream, let r = s.range(of: "Loaded image ID: ") {
                loaded.append(s[r.upperBound...].trimmingCharacters(in: .whitespacesAndNewlines))
            }
        }
        var out: [(String, EngineImage)] = []
        for ref in loaded {
            if let image = try await inspect(ref) { out.append((ref, image)) }
        }
        guard !out.isEmpty else { throw CanopyError(.invalidArgument, "the file held no image the container engine could load (is it a `docker save` archive?)") }
        return out
    }

    public func pull(_ reference: String, progress report: @escaping @Sendable (String) -> Void) async throws -> EngineImage {
        let (repo, tag) = Self.split(reference)
        let response = try await engine.stream("/images/create", query: [("fromImage", repo), ("tag", tag)], method: .POST)
        try await progress(response) { p in
            let text = [p.id, p.status, p.progress].compactMap { $0 }.joined(separator: " ")
            if !text.isEmpty { report(text) }
        }
        guard let image = try await inspect(reference) else { throw CanopyError(.notFound, "the engine pulled nothing for \(reference)") }
        return image
    }

    public func tag(_ source: String, as reference: String) async throws {
        let (repo, tag) = Self.split(reference)
        let (status, body) = try await engine.call(.POST, "/images/\(source)/tag", query: [("repo", repo), ("tag", tag)])
        try DockerEngine.check(status, body)
    }

    public func inspect(_ reference: String) async throws -> EngineImage? {
        let (status, body) = try await engine.call(.GET, "/images/\(reference)/json")
        if status == 404 { return nil }
        try DockerEngine.check(status, body)
        struct Doc: Decodable {
            var Id: String
            var Size: Int64?
            var RepoTags: [String]?
        }
        let doc = try JSONDecoder().decode(Doc.self, from: body)
        return EngineImage(id: doc.Id, sizeBytes: doc.Size ?? 0, references: doc.RepoTags ?? [])
    }

    public func allReferences() async throws -> [String: String] {
        struct Summary: Decodable {
            var Id: String
            var RepoTags: [String]?
        }
        let list = try await engine.call([Summary].self, .GET, "/images/json")
        var out: [String: String] = [:]
        for image in list { for tag in image.RepoTags ?? [] where tag != "<none>:<none>" { out[tag] = image.Id } }
        return out
    }

    public func untag(_ reference: String) async throws {
        let (status, body) = try await engine.call(.DELETE, "/images/\(reference)")
        if status == 404 { return }
        try DockerEngine.check(status, body)
    }

    public func exportFilesystem(_ reference: String, into directory: String) async throws -> [String] {
        struct Doc: Decodable {
            struct Config: Decodable { var Env: [String]? }
            var Id: String
            var Config: Config?
        }
        let (status, body) = try await engine.call(.GET, "/images/\(reference)/json")
        if status == 404 { throw CanopyError(.notFound, "the container engine no longer has image \(reference)") }
        try DockerEngine.check(status, body)
        let env = try JSONDecoder().decode(Doc.self, from: body).Config?.Env ?? []
        // The engine exports containers, not images: one is created (never started) to be exported, then removed.
        // It names a command of its own, since an imported image has none and the engine will not create without.
        struct Create: Encodable {
            var Image: String
            var Entrypoint: [String]
            var Cmd: [String]
            var Labels: [String: String]
        }
        struct Created: Decodable { var Id: String }
        let created = try await engine.call(
            Created.self, .POST, "/containers/create",
            json: Create(Image: reference, Entrypoint: ["/canopy-export"], Cmd: [], Labels: ["canopy.export": "1"]))
        let archive = directory + ".tar"
        do {
            defer { unlink(archive) }
            let fd = open(archive, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
            guard fd >= 0 else { throw CanopyError(.internal, "cannot create \(archive): \(String(cString: strerror(errno)))") }
            let out = FileHandle(fileDescriptor: fd, closeOnDealloc: true)
            // A stalled engine must not hold the workloads of this image for ever: the export has an hour.
            let response = try await engine.stream("/containers/\(created.Id)/export", deadline: .now() + .hours(1))
            guard response.status.code < 300 else {
                let body = try await response.body.collect(upTo: 1 << 20)
                try DockerEngine.check(Int(response.status.code), body)
                throw CanopyError(.internal, "the container engine answered \(response.status.code) to an export")
            }
            do {
                for try await chunk in response.body { try out.write(contentsOf: Data(buffer: chunk)) }
            } catch {
                throw BackendUnavailable("the container engine broke off the export of image \(reference) (\(error))")
            }
            try out.close()
            _ = try? await engine.call(.DELETE, "/containers/\(created.Id)", query: [("force", "1"), ("v", "1")])
            // tar and the walk block: on a thread of their own, not the concurrency pool's.
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                DispatchQueue.global().async {
                    do {
                        try RootFilesystem.unpack(archive: archive, into: directory)
                        continuation.resume()
                    } catch {
                        continuation.resume(throwing: error)
                    }
                }
            }
        } catch {
            _ = try? await engine.call(.DELETE, "/containers/\(created.Id)", query: [("force", "1"), ("v", "1")])
            throw error
        }
        return env
    }

    /// Splits `repo[:tag]` (a registry's port is not a tag) into its repository and tag.
    static func split(_ reference: String) -> (String, String) {
        if let colon = reference.lastIndex(of: ":"), !reference[colon...].contains("/") {
            return (String(reference[..<colon]), String(reference[reference.index(after: colon)...]))
        }
        return (reference, "latest")
    }
}

/// A file's bytes in 1 MiB chunks, each read when the consumer asks for it.
struct FileChunks: AsyncSequence, Sendable {
    typealias Element = ByteBuffer
    let handle: FileHandle

    struct AsyncIterator: AsyncIteratorProtocol {
        let handle: FileHandle
        mutating func next() async throws -> ByteBuffer? {
            guard let data = try handle.read(upToCount: 1 << 20), !data.isEmpty else {
                try? handle.close()
                return nil
            }
            return ByteBuffer(data: data)
        }
    }

    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(handle: handle) }
}

struct ProgressLine: Decodable {
    struct Detail: Decodable { var message: String? }
    var stream: String?
    var status: String?
    var progress: String?
    var id: String?
    var error: String?
    var errorDetail: Detail?
}
