import CanopyCore
import CanopyServices
import Foundation
import Hummingbird

/// `POST /api/v1/ssh-keys`.
struct AddSSHKeyRequest: Decodable, Sendable {
    var publicKey: String
    var name: String?
    static let shape = BodyShape.object(["publicKey": .value, "name": .value])
}

/// `GET /api/v1/ssh`.
struct SSHServerView: Encodable, Sendable {
    var port: Int
    var hostKey: String
}

extension NativeAPI {
    /// `GET /api/v1/ssh-keys`: the caller's SSH keys (an admin's: everyone's).
    @Sendable func listSSHKeys(_ request: Request, context: CanopyRequestContext) async throws -> Response {
        let principal = try context.requirePrincipal()
        guard let sshKeys else { throw CanopyError(.unavailable, "this server keeps no SSH keys") }
        return try APIJSON.response(Page(items: sshKeys.list(as: principal), nextCursor: nil))
    }

    /// `POST /api/v1/ssh-keys`: registers a public key (an OpenSSH line) for the caller.
    @Sendable func addSSHKey(_ request: Request, context: CanopyRequestContext) async throws -> Response {
        let principal = try context.requirePrincipal()
        guard let sshKeys else { throw CanopyError(.unavailable, "this server keeps no SSH keys") }
        let body = try await RequestDecoding.decode(AddSSHKeyRequest.self, from: request, context: context, shape: AddSSHKeyRequest.shape)
        return try APIJSON.response(try await sshKeys.add(body.publicKey, name: body.name, by: principal), status: .created)
    }

    /// `DELETE /api/v1/ssh-keys/{id}`: removes one of the caller's keys (an admin: anyone's).
    @Sendable func removeSSHKey(_ request: Request, context: CanopyRequestContext) async throws -> Response {
        let principal = try context.requirePrincipal()
        guard let sshKeys else { throw CanopyError(.unavailable, "this server keeps no SSH keys") }
        try await sshKeys.remove(try context.parameters.require("id"), as: principal)
        return Response(status: .noContent)
    }

    /// `GET /api/v1/ssh`: where the SSH server listens and its host key, for `canopy ssh` and known_hosts.
    @Sendable func sshInfo(_ request: Request, context: CanopyRequestContext) async throws -> Response {
        _ = try context.requirePrincipal()
        guard let current = sshServer?.current else {
            throw CanopyError(.notFound, "this server runs no SSH server (canopy serve --ssh-port PORT)")
        }
        return try APIJSON.response(SSHServerView(port: current.port, hostKey: current.hostKey))
    }
}
