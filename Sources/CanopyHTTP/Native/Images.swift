import CanopyCore
import CanopyServices
import Foundation
import Hummingbird
import NIOCore
import ServiceLifecycle

/// An image of the catalog as the API shows it.
public struct ImageView: Codable, Sendable, Equatable {
    /// The catalog name, `repo:tag`.
    public var name: String
    /// Whether every tenant may run it.
    public var `public`: Bool
    /// The tenant whose private image it is (absent for a public one).
    public var tenant: String?
    /// The engine's reference for it.
    public var engineReference: String
    /// The engine's content id.
    public var engineID: String
    /// Size in bytes.
    public var sizeBytes: Int64
    /// `import`, `load` or `pull`.
    public var source: String
    /// The reference it was pulled from or that its archive named.
    public var origin: String?
    /// Who added it.
    public var createdBy: String
    /// When.
    public var createdAt: Date

    /// The view of a record.
    public init(_ r: ImageRecord) {
        name = r.name
        `public` = r.isPublic
        tenant = r.tenant
        engineReference = r.engineReference
        engineID = r.engineID
        sizeBytes = r.sizeBytes
        source = r.source.rawValue
        origin = r.origin
        createdBy = r.createdBy
        createdAt = r.createdAt
    }
}

/// `POST /api/v1/images/pull`.
public struct PullImageRequest: Codable, Sendable {
    /// What to pull, e.g. `busybox:1.36` or `ghcr.io/org/app:v2`.
    public var reference: String
    /// The catalog name (default: the reference's name and tag without the registry).
    public var name: String?
    /// Add it as a public image (admins).
    public var `public`: Bool?
    /// The fields it may carry.
    public static let shape = BodyShape.flat("reference", "name", "public")

    public init(reference: String, name: String? = nil, public isPublic: Bool? = nil) {
        self.reference = reference
        self.name = name
        self.public = isPublic
    }
}

/// One line of a pull's answer (`application/x-ndjson`): progress lines, then the image or an error.
public struct PullEvent: Codable, Sendable {
    /// A progress line of the engine's.
    public var progress: String?
    /// The image, once pulled and added.
    public var image: ImageView?
    /// Why the pull failed, once it started.
    public var error: ErrorBody.Detail?

    public init(progress: String? = nil, image: ImageView? = nil, error: ErrorBody.Detail? = nil) {
        self.progress = progress
        self.image = image
        self.error = error
    }
}

extension ErrorBody.Detail {
    /// The detail of an error.
    public init(_ e: CanopyError) {
        self.init(code: e.code.rawValue, message: e.message, field: e.field)
    }
}

extension NativeAPI {
    // MARK: images

    /// The `{name}` segment, percent-decoded (`busybox%3A1.36`, `team%2Fapp%3Av1`).
    static func imageName(_ context: CanopyRequestContext) throws -> String {
        let raw = try context.parameters.require("name")
        guard let name = raw.removingPercentEncoding, !name.isEmpty else { throw CanopyError.invalid("name", "the image name is not validly URL-encoded") }
        return name
    }

    /// `?public=true` (the public image), `?public=false` (the caller's tenant's), `?tenant=T` (admins: another
    /// tenant's), else nil: the name as the caller's workloads resolve it.
    static func imageScope(_ request: Request, _ principal: Principal) throws -> ImageScope? {
        let q = request.uri.queryParameters
        let isPublic = try QueryValue.bool(q.get("public"), field: "public")
        if let tenant = q.get("tenant") {
            guard isPublic != true else { throw CanopyError.invalid("tenant", "give public=true or tenant, not both") }
            guard Queue.isValidName(tenant) else { throw CanopyError.invalid("tenant", "tenant names are 1 to 63 lowercase letters, digits, '-' or '_'") }
            return .tenant(tenant)
        }
        return isPublic.map { $0 ? .public : .tenant(principal.tenant) }
    }

    /// `GET /api/v1/images`: public images and the caller's tenant's (every tenant's for an admin).
    @Sendable func listImages(_ request: Request, context: CanopyRequestContext) async throws -> Response {
        let principal = try context.requirePrincipal()
        return try APIJSON.response(Page(items: try await images.list(as: principal).map(ImageView.init), nextCursor: nil))
    }

    /// `GET /api/v1/images/{name}`.
    @Sendable func getImage(_ request: Request, context: CanopyRequestContext) async throws -> Response {
        let principal = try context.requirePrincipal()
        let scope = try Self.imageScope(request, principal)
        return try APIJSON.response(ImageView(try await images.get(try Self.imageName(context), scope: scope, as: principal)))
    }

    /// `DELETE /api/v1/images/{name}`.
    @Sendable func removeImage(_ request: Request, context: CanopyRequestContext) async throws -> Response {
        let principal = try context.requirePrincipal()
        let scope = try Self.imageScope(request, principal)
        _ = try await images.remove(try Self.imageName(context), scope: scope, as: principal)
        return Response(status: .noContent)
    }

    /// `POST /api/v1/images/import?name=NAME:TAG[&public=true]`: the body is a root-filesystem tarball, streamed.
    @Sendable func importImage(_ request: Request, context: CanopyRequestContext) async throws -> Response {
        let principal = try context.requirePrincipal()
        let q = request.uri.queryParameters
        guard let name = q.get("name"), !name.isEmpty else { throw CanopyError.invalid("name", "name the image: ?name=NAME:TAG") }
        let isPublic = try QueryValue.bool(q.get("public"), field: "public") ?? false
        _ = try await images.checkAdd(name: name, public: isPublic, as: principal)
        let spool = try await spoolBody(request)
        defer { spool.remove() }
        let record = try await images.importRootfs(file: spool.path, name: name, public: isPublic, as: principal)
        return try APIJSON.response(ImageView(record), status: .created)
    }

    /// `POST /api/v1/images/load[?name=NAME:TAG][&public=true]`: the body is an image archive (`docker save`), streamed.
    @Sendable func loadImage(_ request: Request, context: CanopyRequestContext) async throws -> Response {
        let principal = try context.requirePrincipal()
        let q = request.uri.queryParameters
        let name = q.get("name").flatMap { $0.isEmpty ? nil : $0 }
        let isPublic = try QueryValue.bool(q.get("public"), field: "public") ?? false
        _ = try await images.checkAdd(name: name, public: isPublic, as: principal)
        let spool = try await spoolBody(request)
        defer { spool.remove() }
        let records = try await images.load(file: spool.path, name: name, public: isPublic, as: principal)
        return try APIJSON.response(Page(items: records.map(ImageView.init), nextCursor: nil), status: .created)
    }

    /// Writes a request body to a spool file as it arrives; refused past the limit, or when empty.
    func spoolBody(_ request: Request) async throws -> ImageSpool {
        if let length = request.headers[.contentLength].flatMap({ Int64($0) }), length > ImageService.maxUploadBytes {
            throw CanopyError(
                .payloadTooLarge, "the upload is larger than \(ImageService.maxUploadBytes >> 30) GiB, the most an image file may be", field: "body")
        }
        let spool = try images.spool()
        do {
            for try await chunk in request.body {
                if Task.isShuttingDownGracefully { throw CanopyError(.unavailable, "the server is shutting down; retry the upload") }
                try chunk.withUnsafeReadableBytes { try spool.write($0) }
            }
            spool.close()
            guard spool.size > 0 else { throw CanopyError.invalid("body", "the request has no body: send the file's bytes") }
        } catch {
            spool.remove()
            throw error
        }
        return spool
    }

    /// `POST /api/v1/images/pull`: checks the request, then answers 200 with NDJSON: the engine's progress lines as
    /// `{"progress": ...}`, then `{"image": ...}`, or `{"error": ...}` if the pull fails once started.
    @Sendable func pullImage(_ request: Request, context: CanopyRequestContext) async throws -> Response {
        let principal = try context.requirePrincipal()
        let body = try await RequestDecoding.decode(PullImageRequest.self, from: request, context: context, shape: PullImageRequest.shape)
        let isPublic = body.public ?? false
        _ = try await images.checkPull(reference: body.reference, name: body.name, public: isPublic, as: principal)
        let images = self.images
        let response = ResponseBody { writer in
            let (events, continuation) = AsyncStream<PullEvent>.makeStream()
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    do {
                        let record = try await images.pull(
                            reference: body.reference, name: body.name, public: isPublic, progress: { continuation.yield(PullEvent(progress: $0)) },
                            as: principal)
                        continuation.yield(PullEvent(image: ImageView(record)))
                    } catch {
                        continuation.yield(PullEvent(error: ErrorBody.Detail(NativeErrors.canopyError(from: error))))
                    }
                    continuation.finish()
                }
                let encoder = APIJSON.encoder()
                for await event in events {
                    var line = try encoder.encode(event)
                    line.append(10)
                    try await writer.write(ByteBuffer(bytes: line))
                }
                try await group.waitForAll()
            }
            try await writer.finish(nil)
        }
        return Response(status: .ok, headers: [.contentType: "application/x-ndjson"], body: response)
    }
}
