import CanopyCore
import CanopySQLite
import CanopyTesting
import Foundation
import Synchronization
import Testing

@testable import CanopyServices

/// The catalog over a real SQLite store and the in-memory engine.
private func catalog(engine: FakeImageEngine? = FakeImageEngine()) throws -> (ImageService, FakeImageEngine?, SQLiteStore, String) {
    let dir = try makeTempDir("canopy-images")
    let store = try SQLiteStore(path: dir + "/canopy.sqlite")
    return (ImageService(store: store, engine: engine, spoolDirectory: dir + "/spool", pullRegistries: ["docker.io", "ghcr.io"]), engine, store, dir)
}

private func file(_ dir: String, _ bytes: Int = 1024) throws -> String {
    let path = dir + "/file-\(UUID().uuidString.prefix(6)).tar"
    try Data(repeating: 7, count: bytes).write(to: URL(fileURLWithPath: path))
    return path
}

private let admin = Principal(user: "admin", tenant: "default", role: .admin)
private let alice = Principal(user: "alice", tenant: "acme", role: .user)
private let bob = Principal(user: "bob", tenant: "globex", role: .user)

@Suite("the image catalog")
struct ImageServiceTests {
    @Test("an import lands under the catalog's engine reference; a tenant's private image shadows the public one for that tenant only")
    func importAndResolve() async throws {
        let (images, engine, _, dir) = try catalog()
        let pub = try await images.importRootfs(file: try file(dir, 2048), name: "busybox:1.36", public: true, as: admin)
        #expect(pub.engineReference == "canopy/public/busybox:1.36" && pub.isPublic && pub.sizeBytes == 2048 && pub.source == .import)
        let mine = try await images.importRootfs(file: try file(dir), name: "busybox:1.36", public: false, as: alice)
        #expect(mine.engineReference == "canopy/t-acme/busybox:1.36" && mine.tenant == "acme" && mine.createdBy == "alice")
        #expect(engine?.references == ["canopy/public/busybox:1.36", "canopy/t-acme/busybox:1.36"])
        #expect(try await images.resolve("busybox:1.36", tenant: "acme")?.engineReference == mine.engineReference)
        #expect(try await images.resolve("busybox:1.36", tenant: "globex")?.engineReference == pub.engineReference)
        #expect(try await images.resolve("busybox", tenant: "globex") == nil)
        // Listing: public and own; an admin sees every tenant's.
        #expect(try await images.list(as: bob).map(\.engineReference) == ["canopy/public/busybox:1.36"])
        #expect(try await images.list(as: alice).count == 2)
        #expect(try await images.list(as: admin).count == 2)
        // Another tenant's private image looks exactly like a missing one.
        let missing = await errorOf { _ = try await images.get("busybox:1.36", scope: .tenant("acme"), as: bob) }
        let reallyMissing = await errorOf { _ = try await images.get("busybox:1.36", scope: .tenant("nosuch"), as: admin) }
        #expect(missing?.code == .notFound && missing?.message == reallyMissing?.message)
    }

    @Test("only admins add or remove public images; users add and remove their tenant's; a taken name is refused")
    func permissions() async throws {
        let (images, engine, _, dir) = try catalog()
        let denied = await errorOf { _ = try await images.importRootfs(file: try file(dir), name: "tool:1", public: true, as: alice) }
        #expect(denied?.code == .permissionDenied && denied?.field == "public")
        #expect(engine?.calls.isEmpty == true)
        _ = try await images.importRootfs(file: try file(dir), name: "tool:1", public: true, as: admin)
        let taken = await errorOf { _ = try await images.importRootfs(file: try file(dir), name: "tool:1", public: true, as: admin) }
        #expect(taken?.code == .alreadyExists && taken?.field == "name")
        let userRemovesPublic = await errorOf { _ = try await images.remove("tool:1", as: alice) }
        #expect(userRemovesPublic?.code == .permissionDenied)
        _ = try await images.importRootfs(file: try file(dir), name: "tool:1", public: false, as: alice)
        // Alice's name resolves to her own image first: that is the one she removes.
        #expect(try await images.remove("tool:1", as: alice).tenant == "acme")
        #expect(try await images.get("tool:1", as: alice).isPublic)
        #expect(try await images.remove("tool:1", scope: .public, as: admin).isPublic)
        #expect(engine?.references == [])
        let gone = await errorOf { _ = try await images.remove("tool:1", as: admin) }
        #expect(gone?.code == .notFound)
    }

    @Test("without an engine nothing can be added, with an error that says how to configure one; listing still works")
    func noEngine() async throws {
        let (images, _, _, dir) = try catalog(engine: nil)
        for add in [
            { _ = try await images.importRootfs(file: try file(dir), name: "a:1", public: false, as: alice) },
            { _ = try await images.load(file: try file(dir), name: nil, public: false, as: alice) },
            { _ = try await images.pull(reference: "busybox:1.36", name: nil, public: false, as: alice) },
        ] as [@Sendable () async throws -> Void] {
            let e = await errorOf(add)
            #expect(e?.code == .conflict)
            #expect(e?.message.contains("canopy serve --container-engine unix:///var/run/docker.sock") == true)
        }
        #expect(try await images.list(as: alice).isEmpty)
    }

    @Test("users pull only from allowed registries (an open pull makes the engine fetch any address); admins from any")
    func pullRegistries() async throws {
        let (images, _, _, _) = try catalog()
        let alice = Principal(user: "alice", tenant: "acme", role: .user)
        for reference in ["127.0.0.1:7420/x:1", "169.254.169.254/latest:1", "quay.io/org/app:1"] {
            await #expect(throws: CanopyError.self) { _ = try await images.pull(reference: reference, name: "q:1", public: false, as: alice) }
            do {
                _ = try await images.pull(reference: reference, name: "q:1", public: false, as: alice)
            } catch let e as CanopyError {
                #expect(e.code == .permissionDenied && e.field == "reference" && e.message.contains("--pull-registry"), "\(e)")
            }
        }
        _ = try await images.pull(reference: "index.docker.io/library/busybox:1.36", name: "bb:1", public: false, as: alice)
        let admin = Principal(user: "admin", tenant: "default", role: .admin)
        _ = try await images.pull(reference: "quay.io/org/app:1", name: nil, public: true, as: admin)
    }

    @Test("a pull reports progress, takes the reference's name without the registry, and keeps only the catalog's name in the engine")
    func pull() async throws {
        let (images, engine, _, _) = try catalog()
        let lines = LineBox()
        let r = try await images.pull(reference: "ghcr.io/org/app:v2", name: nil, public: false, progress: { lines.append($0) }, as: alice)
        #expect(r.name == "org/app:v2" && r.origin == "ghcr.io/org/app:v2" && r.source == .pull)
        #expect(lines.all.count == 3)
        #expect(engine?.references == ["canopy/t-acme/org/app:v2"])
        let unknown = await errorOf { _ = try await images.pull(reference: "nosuch/image:1", name: nil, public: false, as: alice) }
        #expect(unknown?.code == .notFound)
        #expect(try await images.resolve("nosuch/image:1", tenant: "acme") == nil)
        // The catalog's own engine names cannot be pulled over.
        let hijack = await errorOf { _ = try await images.pull(reference: "canopy/public/busybox:1.36", name: "x:1", public: false, as: alice) }
        #expect(hijack?.field == "reference")
        let digestOnly = await errorOf {
            _ = try await images.pull(reference: "busybox@sha256:" + String(repeating: "0", count: 64), name: nil, public: false, as: alice)
        }
        #expect(digestOnly?.field == "name")
    }

    @Test("a load names images as the archive does, or as asked when it holds one; an archive naming the catalog's references is refused and undone")
    func load() async throws {
        let (images, engine, _, dir) = try catalog()
        let engineRef = try #require(engine)
        let loaded = try await images.load(file: try file(dir), name: nil, public: false, as: alice)
        #expect(loaded.map(\.name) == ["busybox:1.36"] && loaded[0].origin == "busybox:1.36")
        #expect(engineRef.references == ["canopy/t-acme/busybox:1.36"])
        _ = try await images.load(file: try file(dir), name: "mybox:2", public: false, as: alice)
        #expect(try await images.get("mybox:2", as: alice).source == .load)

        engineRef.archiveReferences.withLock { $0 = ["a:1", "b:1"] }
        let two = await errorOf { _ = try await images.load(file: try file(dir), name: "c:1", public: false, as: alice) }
        #expect(two?.field == "name")
        #expect(!engineRef.references.contains("a:1"))

        // Bob's archive claims Alice's engine name: her image is put back and his archive refused.
        let before = engineRef.imageID("canopy/t-acme/busybox:1.36")
        engineRef.archiveReferences.withLock { $0 = ["canopy/t-acme/busybox:1.36"] }
        let hostile = await errorOf { _ = try await images.load(file: try file(dir), name: nil, public: false, as: bob) }
        #expect(hostile?.code == .invalidArgument && hostile?.field == "body")
        #expect(engineRef.imageID("canopy/t-acme/busybox:1.36") == before)
        #expect(try await images.list(as: bob).isEmpty)
    }

    @Test("an image that an unfinished workload runs cannot be removed")
    func inUse() async throws {
        let (images, _, store, dir) = try catalog()
        let r = try await images.importRootfs(file: try file(dir), name: "job:1", public: false, as: alice)
        var w = Workload(id: "W1", tenant: "acme", owner: "alice", spec: WorkloadSpec(image: "job:1", command: ["true"]), createdAt: Date())
        w.imageReference = r.engineID
        _ = try await store.insert(w)
        let e = await errorOf { _ = try await images.remove("job:1", as: alice) }
        #expect(e?.code == .conflict)
    }
}

/// An engine whose every call fails with an error of its own type (a dockerd that answers 500 to a corrupt file).
private struct BrokenEngine: ImageEngine {
    struct Failure: Error {}
    func importRootfs(file: String, as reference: String) async throws -> EngineImage { throw Failure() }
    func allReferences() async throws -> [String: String] { throw Failure() }
    func archiveReferences(file: String) async throws -> [String] { [] }
    func load(file: String) async throws -> [(reference: String, image: EngineImage)] { throw Failure() }
    func pull(_ reference: String, progress: @escaping @Sendable (String) -> Void) async throws -> EngineImage { throw Failure() }
    func tag(_ source: String, as reference: String) async throws { throw Failure() }
    func inspect(_ reference: String) async throws -> EngineImage? { throw Failure() }
    func untag(_ reference: String) async throws { throw Failure() }
    func exportFilesystem(_ reference: String, into directory: String) async throws -> [String] { throw Failure() }
}

@Suite("the image catalog over a failing engine")
struct BrokenEngineTests {
    @Test("an engine's own failure on a caller's file or reference is a 400 naming it, and nothing is recorded")
    func failures() async throws {
        let dir = try makeTempDir("canopy-images")
        let images = ImageService(store: try SQLiteStore(path: dir + "/canopy.sqlite"), engine: BrokenEngine(), spoolDirectory: dir + "/spool")
        let imported = await errorOf { _ = try await images.importRootfs(file: try file(dir), name: "a:1", public: false, as: alice) }
        #expect(imported?.code == .invalidArgument && imported?.field == "body")
        let loaded = await errorOf { _ = try await images.load(file: try file(dir), name: nil, public: false, as: alice) }
        #expect(loaded?.code == .invalidArgument && loaded?.field == "body")
        let pulled = await errorOf { _ = try await images.pull(reference: "busybox", name: nil, public: false, as: alice) }
        #expect(pulled?.code == .invalidArgument && pulled?.field == "reference")
        #expect(try await images.list(as: admin).isEmpty)
    }
}

/// The error a body throws, or nil.
func errorOf(_ body: () async throws -> Void) async -> CanopyError? {
    do {
        try await body()
        return nil
    } catch let e as CanopyError {
        return e
    } catch {
        return CanopyError(.internal, "\(error)")
    }
}

/// Lines collected from a progress callback.
final class LineBox: Sendable {
    private let lines = Mutex<[String]>([])
    func append(_ line: String) { lines.withLock { $0.append(line) } }
    var all: [String] { lines.withLock { $0 } }
}
