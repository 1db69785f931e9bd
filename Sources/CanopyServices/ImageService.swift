import CanopyCore
import Foundation
import Synchronization

/// Which catalog an image name is looked up in.
public enum ImageScope: Sendable, Hashable {
    /// The public images, which every tenant may run.
    case `public`
    /// A tenant's private images.
    case tenant(String)

    /// The tenant of a private scope; nil for public.
    public var tenant: String? {
        if case .tenant(let t) = self { return t }
        return nil
    }
}

/// The image catalog: names users give to images, public or private to a tenant, and the engine references behind
/// them. Records live in the store (`records`, kind `image`); images live in the container engine, under references
/// the catalog chooses (`canopy/public/...`, `canopy/t-TENANT/...`) so that tenants never meet in the engine's one
/// global namespace. Without an engine the catalog can be listed and emptied, but nothing can be added.
public final class ImageService: Sendable {
    /// The records' kind in the store.
    public static let kind = "image"
    /// The largest file an import or a load takes.
    public static let maxUploadBytes: Int64 = 8 << 30

    let store: any Store
    let engine: (any ImageEngine)?
    let spoolDirectory: String
    let clock: Clock
    /// Record ids being added right now: a second add of the same name waits for nothing and is refused.
    private let inFlight = Mutex<Set<String>>([])

    /// Creates the catalog over the store and the engine (nil: this server has no container engine). Uploads are
    /// spooled to `spoolDirectory` (under the server's data directory).
    public init(store: any Store, engine: (any ImageEngine)?, spoolDirectory: String, clock: Clock = .system, pullRegistries: [String] = ["docker.io"]) {
        self.pullRegistries = Set(pullRegistries.map(ImageReference.canonicalRegistry))
        self.store = store
        self.engine = engine
        self.spoolDirectory = spoolDirectory
        self.clock = clock
    }

    /// The registries users may pull from (admins pull from any): the engine fetches what a pull names, so an open
    /// pull would let any user make it connect to any address it can reach, and read the answer in its errors.
    let pullRegistries: Set<String>

    /// Whether this server has a container engine.
    public var hasEngine: Bool { engine != nil }

    // MARK: reading

    /// Every image the principal may run: public ones and its tenant's (every tenant's for an admin), by name.
    public func list(as principal: Principal) async throws -> [ImageRecord] {
        try await store.records(kind: Self.kind, tenant: nil)
            .compactMap { try? JSONDecoder().decode(ImageRecord.self, from: $0.body) }
            .filter { $0.tenant.map(principal.canSee(tenant:)) ?? true }
            .sorted { ($0.name, $0.tenant ?? "") < ($1.name, $1.tenant ?? "") }
    }

    /// The image a workload of `tenant` runs for a catalog name: the tenant's own private image, else a public one
    /// of that name; nil when there is neither. `name` is normalized (`busybox` is `busybox:latest`).
    public func resolve(_ name: String, tenant: String) async throws -> ImageRecord? {
        guard case .success(let ref) = ImageReference.read(name), ref.domain == nil, ref.digest == nil else { return nil }
        if let mine = try await record(ref.catalogName, tenant: tenant) { return mine }
        return try await record(ref.catalogName, tenant: nil)
    }

    /// One image by name: in `scope` when given, else as the principal's workloads would resolve it. Another
    /// tenant's private image answers exactly as a missing one.
    public func get(_ name: String, scope: ImageScope? = nil, as principal: Principal) async throws -> ImageRecord {
        let ref = try ImageReference.parseCatalogName(name, field: "name")
        let found: ImageRecord?
        switch scope {
        case .none: found = try await resolve(ref.catalogName, tenant: principal.tenant)
        case .public: found = try await record(ref.catalogName, tenant: nil)
        case .tenant(let t): found = principal.canSee(tenant: t) ? try await record(ref.catalogName, tenant: t) : nil
        }
        guard let found else { throw Self.missing(ref.catalogName) }
        return found
    }

    static func missing(_ name: String) -> CanopyError {
        CanopyError(.notFound, "no image named \(name) in the catalog (canopy images ls lists what there is)", field: "name")
    }

    func record(_ name: String, tenant: String?) async throws -> ImageRecord? {
        guard let r = try await store.record(kind: Self.kind, id: ImageRecord.recordID(name: name, tenant: tenant)) else { return nil }
        return try JSONDecoder().decode(ImageRecord.self, from: r.body)
    }

    // MARK: adding

    /// Where an add puts an image, once the caller may put it there.
    public struct Target: Sendable {
        /// The catalog name (nil for a load that takes its names from the archive).
        public var name: ImageReference?
        /// The tenant; nil for public.
        public var tenant: String?
    }

    /// Checks an add before any byte is read: only admins add public images, the server must have an engine, and
    /// the name must be a catalog name not yet taken in that scope.
    public func checkAdd(name: String?, public isPublic: Bool, as principal: Principal) async throws -> Target {
        if isPublic, principal.role != .admin {
            throw CanopyError(.permissionDenied, "only admins add public images; leave out public to add it to your tenant's own images", field: "public")
        }
        let ref = try name.map { n throws(CanopyError) in try ImageReference.parseCatalogName(n, field: "name") }
        guard engine != nil else { throw CanopyError(.conflict, ImagePolicy.noEngineMessage) }
        let target = Target(name: ref, tenant: isPublic ? nil : principal.tenant)
        if let ref { try await checkFree(ref, tenant: target.tenant) }
        return target
    }

    func checkFree(_ ref: ImageReference, tenant: String?) async throws {
        if try await record(ref.catalogName, tenant: tenant) != nil {
            let scope = tenant.map { "tenant \($0)'s images" } ?? "the public images"
            throw CanopyError(.alreadyExists, "\(scope) already have \(ref.catalogName); remove it first (canopy images rm \(ref.catalogName))", field: "name")
        }
        let engineRef = ImageRecord.engineReference(for: ref, tenant: tenant)
        if case .failure = ImageReference.read(engineRef) {
            throw CanopyError.invalid(
                "name", "\(ref.catalogName) is too long: the engine's name for it, \(engineRef.prefix(60))..., passes \(ImageReference.maxLength) characters")
        }
    }

    /// A new spool file for an upload, limited to `maxUploadBytes`.
    public func spool() throws -> ImageSpool { try ImageSpool(directory: spoolDirectory, limit: Self.maxUploadBytes) }

    /// Imports a root-filesystem tarball as `name` (public, or the principal's tenant's).
    public func importRootfs(file: String, name: String, public isPublic: Bool, as principal: Principal) async throws -> ImageRecord {
        let target = try await checkAdd(name: name, public: isPublic, as: principal)
        guard let engine, let ref = target.name else { throw CanopyError(.conflict, ImagePolicy.noEngineMessage) }
        return try await adding(ref, tenant: target.tenant, as: principal) { engineRef in
            let image = try await Self.engineCall("import the tarball", field: "body") { try await engine.importRootfs(file: file, as: engineRef) }
            return (image, .import, nil)
        }
    }

    /// Checks a pull before it starts (see `checkAdd`): the reference, the name it gets, the caller's right to add it.
    public func checkPull(reference: String, name: String?, public isPublic: Bool, as principal: Principal) async throws -> (ImageReference, Target) {
        let source = try ImageReference.parse(reference, field: "reference")
        if Self.isCatalogNamespace(source) {
            throw CanopyError.invalid(
                "reference", "\(ImageRecord.engineNamespace)/... references are the catalog's own names in the engine; pull from another repository")
        }
        let registry = source.registry
        if principal.role != .admin, !pullRegistries.contains(registry) {
            throw CanopyError(
                .permissionDenied,
                "pulls from \(registry) are not allowed on this server (allowed: \(pullRegistries.sorted().joined(separator: ", "))); an admin allows a registry with canopy serve --pull-registry HOST",
                field: "reference")
        }
        guard let catalogName = name ?? source.defaultCatalogName else {
            throw CanopyError.invalid("name", "\(reference) has a digest and no tag: give the catalog name to use (name, e.g. app:v1)")
        }
        return (source, try await checkAdd(name: catalogName, public: isPublic, as: principal))
    }

    /// Pulls `reference` from its registry, named `name` (default: its path and tag without the registry), reporting
    /// the engine's progress lines as they come.
    public func pull(
        reference: String, name: String?, public isPublic: Bool, progress: @escaping @Sendable (String) -> Void = { _ in }, as principal: Principal
    ) async throws -> ImageRecord {
        let (source, target) = try await checkPull(reference: reference, name: name, public: isPublic, as: principal)
        guard let engine, let ref = target.name else { throw CanopyError(.conflict, ImagePolicy.noEngineMessage) }
        return try await adding(ref, tenant: target.tenant, as: principal) { engineRef in
            // A name the engine already had (others may use it) stays; only a name this pull created is dropped.
            let existed = (try? await engine.inspect(source.description)) != nil
            let image = try await Self.engineCall("pull \(source)", field: "reference") { try await engine.pull(source.description, progress: progress) }
            try await Self.engineCall("name the pulled image", field: "reference") { try await engine.tag(image.id, as: engineRef) }
            if !existed { await Self.dropName(source.description, of: image, in: engine) }
            return (image, .pull, source.description)
        }
    }

    /// Loads an image archive: each image it holds joins the catalog under the name the archive gives it, or under
    /// `name` when the archive holds one image.
    public func load(file: String, name: String?, public isPublic: Bool, as principal: Principal) async throws -> [ImageRecord] {
        let target = try await checkAdd(name: name, public: isPublic, as: principal)
        guard let engine else { throw CanopyError(.conflict, ImagePolicy.noEngineMessage) }
        // The engine's names before the load: a name the archive also carries is put back as it was afterwards
        // (the engine may serve others, whose images must not lose or change their names), and only a name the
        // load created is dropped.
        // What the archive would name, read before the engine sees it: a catalog reference is refused here, so the
        // engine never moves one, not even for a moment.
        for reference in try await engine.archiveReferences(file: file) {
            guard let parsed = try? ImageReference.parse(reference) else {
                throw CanopyError.invalid("body", "the archive names \(reference), which is not an image reference")
            }
            if Self.isCatalogNamespace(parsed) {
                throw CanopyError.invalid("body", "the archive names \(reference): \(ImageRecord.engineNamespace)/... names are the catalog's own")
            }
        }
        let before = (try? await engine.allReferences()) ?? [:]
        let loaded = try await Self.engineCall("load the archive", field: "body") { try await engine.load(file: file) }
        @Sendable func settleName(_ reference: String, of image: EngineImage) async {
            if let old = before[reference] {
                if old != image.id { try? await engine.tag(old, as: reference) }
            } else {
                await Self.dropName(reference, of: image, in: engine)
            }
        }
        // An archive can name any reference, the catalog's own included, and loading it moves that name: put every
        // catalog name it touched back where the catalog says, and refuse the archive.
        let hijacked = loaded.filter { item in (try? ImageReference.parse(item.reference)).map(Self.isCatalogNamespace) ?? false }
        if !hijacked.isEmpty {
            try await restore(hijacked.map(\.reference), in: engine)
            for item in loaded where !hijacked.contains(where: { $0.reference == item.reference }) {
                await settleName(item.reference, of: item.image)
            }
            throw CanopyError.invalid("body", "the archive names \(hijacked[0].reference): \(ImageRecord.engineNamespace)/... names are the catalog's own")
        }
        guard !loaded.isEmpty else { throw CanopyError.invalid("body", "the archive holds no image") }
        var plan: [(ImageReference, String, EngineImage)] = []
        do {
            if let ref = target.name {
                guard loaded.count == 1 else {
                    throw CanopyError.invalid(
                        "name",
                        "the archive holds \(loaded.count) images (\(loaded.map(\.reference).joined(separator: ", "))); load it without a name, or one image per archive"
                    )
                }
                plan = [(ref, loaded[0].reference, loaded[0].image)]
            } else {
                for item in loaded {
                    guard let parsed = try? ImageReference.parse(item.reference), let n = parsed.defaultCatalogName else {
                        throw CanopyError.invalid("name", "the archive's image \(item.image.id.prefix(19)) has no name; give one (name=NAME:TAG)")
                    }
                    let ref = try ImageReference.parseCatalogName(n, field: "name")
                    try await checkFree(ref, tenant: target.tenant)
                    plan.append((ref, item.reference, item.image))
                }
            }
        } catch {
            for item in loaded { await settleName(item.reference, of: item.image) }
            throw error
        }
        var added: [ImageRecord] = []
        for (ref, origin, image) in plan {
            added.append(
                try await adding(ref, tenant: target.tenant, as: principal) { engineRef in
                    try await Self.engineCall("name the loaded image", field: "body") { try await engine.tag(image.id, as: engineRef) }
                    await settleName(origin, of: image)
                    return (image, .load, origin)
                })
        }
        return added
    }

    /// Runs an add for one name: refused while another add of that name runs, recorded once the engine has it,
    /// and the engine's reference dropped again if the record cannot be written.
    func adding(
        _ ref: ImageReference, tenant: String?, as principal: Principal, _ body: (String) async throws -> (EngineImage, ImageRecord.Source, String?)
    ) async throws -> ImageRecord {
        let id = ImageRecord.recordID(name: ref.catalogName, tenant: tenant)
        guard inFlight.withLock({ $0.insert(id).inserted }) else {
            throw CanopyError(.conflict, "\(ref.catalogName) is being added right now; try again when that is done", field: "name")
        }
        defer { inFlight.withLock { _ = $0.remove(id) } }
        try await checkFree(ref, tenant: tenant)
        let engineRef = ImageRecord.engineReference(for: ref, tenant: tenant)
        let (image, source, origin) = try await body(engineRef)
        let record = ImageRecord(
            name: ref.catalogName, tenant: tenant, engineReference: engineRef, engineID: image.id, sizeBytes: image.sizeBytes, source: source,
            origin: origin, createdBy: principal.user, createdAt: clock.now())
        do {
            try await store.put(
                record: StoredRecord(kind: Self.kind, id: id, tenant: tenant ?? "", name: ref.catalogName, body: try JSONEncoder().encode(record)))
        } catch {
            try? await engine?.untag(engineRef)
            throw error
        }
        return record
    }

    /// Whether a reference lies in the engine namespace the catalog keeps for itself (`canopy/...` on Docker Hub).
    static func isCatalogNamespace(_ ref: ImageReference) -> Bool {
        ref.registry == "docker.io" && ref.path.split(separator: "/").first.map(String.init) == ImageRecord.engineNamespace
    }

    /// Drops the name an image came in under (a pulled reference, an archive's), keeping only the catalog's: only
    /// while it still names that image, so another tenant's pull of the same name in the meantime keeps its image.
    static func dropName(_ reference: String, of image: EngineImage, in engine: any ImageEngine) async {
        guard reference != image.id, let current = try? await engine.inspect(reference), current.id == image.id else { return }
        try? await engine.untag(reference)
    }

    /// Points catalog references an archive moved back at the images the catalog recorded for them.
    func restore(_ references: [String], in engine: any ImageEngine) async throws {
        let records = try await store.records(kind: Self.kind, tenant: nil).compactMap { try? JSONDecoder().decode(ImageRecord.self, from: $0.body) }
        for reference in references {
            let bare = (try? ImageReference.parse(reference)).map { "\($0.path):\($0.effectiveTag)" } ?? reference
            if let r = records.first(where: { $0.engineReference == bare }) {
                // The recorded image stays in the engine (dangling) when a load moves its name away.
                try await engine.tag(r.engineID, as: r.engineReference)
            } else {
                try? await engine.untag(reference)
            }
        }
    }

    // MARK: removing

    /// Removes an image from the catalog and its reference from the engine. Admins remove public images; users
    /// their tenant's. An image that unfinished workloads will run is kept until they end.
    public func remove(_ name: String, scope: ImageScope? = nil, as principal: Principal) async throws -> ImageRecord {
        let record = try await get(name, scope: scope, as: principal)
        if record.isPublic, principal.role != .admin {
            throw CanopyError(.permissionDenied, "\(record.name) is a public image; only admins remove public images")
        }
        // Workloads run the image by its id (or, recorded before that, by the catalog's reference); only those
        // this record's scope can run count, so another tenant's use of the same content is never revealed.
        let users = try await store.activeWorkloads().filter { w in
            (w.imageReference == record.engineID || w.imageReference == record.engineReference) && (record.isPublic || w.tenant == record.tenant)
        }
        if let first = users.first {
            throw CanopyError(
                .conflict, "\(record.name) is the image of \(users.count) unfinished workload(s) (\(first.id)...); stop them or wait for them to end",
                field: "name")
        }
        _ = try await store.deleteRecord(kind: Self.kind, id: ImageRecord.recordID(name: record.name, tenant: record.tenant))
        // The catalog no longer names it either way; an engine that keeps the image (a stopped container still
        // uses it) keeps a name nothing resolves to, which the next add of that name moves.
        if let engine, (try? await engine.inspect(record.engineReference)) ?? nil != nil {
            try? await engine.untag(record.engineReference)
        }
        return record
    }

    /// Runs an engine call that works on what the caller sent (a file, a reference): the adapter's own errors
    /// (`CanopyError`, an unreachable engine among them) pass through; any other failure is the input's, a 400
    /// naming `field`, never a 500.
    static func engineCall<T>(_ what: String, field: String, _ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch let e as CanopyError {
            throw e
        } catch is CancellationError {
            throw CanopyError(.unavailable, "cancelled before the container engine could \(what)")
        } catch let e as BackendUnavailable {
            // The engine is away: nothing is wrong with the caller's file or reference; try again later.
            throw CanopyError(.unavailable, "the container engine cannot be reached now, so it could not \(what): \(e.message)")
        } catch {
            throw CanopyError(.invalidArgument, "the container engine could not \(what): \(error)", field: field)
        }
    }
}
