import CanopyCore
import CanopySQLite
import CanopyTesting
import Foundation
import Testing

@testable import CanopyServices

@Suite("passwords: a slow salted hash in the store, one answer for every wrong guess, sign-ins throttled")
struct PasswordServiceTests {
    func service(_ clock: ManualClock) throws -> (PasswordService, SQLiteStore) {
        let store = try SQLiteStore(path: try makeTempDir("canopy-passwords") + "/canopy.sqlite")
        return (PasswordService(store: store, clock: clock.clock), store)
    }

    @Test("only scrypt's output and a random salt are stored; the right password signs in, wrong user, tenant or password do not")
    func hashAndVerify() async throws {
        let clock = ManualClock()
        let (passwords, store) = try service(clock)
        let alice = try await passwords.create(user: "alice", tenant: "lab", role: .user, password: "correct horse")
        let bob = try await passwords.create(user: "bob", tenant: "lab", role: .admin, password: "correct horse")
        #expect(alice.salt != bob.salt && alice.hash != bob.hash, "the same password hashes differently per user")
        #expect(alice.scryptN == 1 << 15 && alice.hash.count == 64)
        let stored = try #require(try await store.record(kind: "canopy.user", id: "lab/alice"))
        #expect(!String(decoding: stored.body, as: UTF8.self).contains("correct horse"))
        #expect(
            try await passwords.verify(user: "alice", tenant: "lab", password: "correct horse", client: "a").principal
                == Principal(user: "alice", tenant: "lab", role: .user))
        #expect(try await passwords.verify(user: "bob", tenant: "lab", password: "correct horse", client: "a").principal.role == .admin)
        for (user, tenant, password) in [("alice", "lab", "wrong horse"), ("alice", "other", "correct horse"), ("nobody", "lab", "correct horse")] {
            await #expect(throws: PasswordService.Refusal.invalid) { try await passwords.verify(user: user, tenant: tenant, password: password, client: "a") }
        }
        // Rules: at least 8 characters, names as everywhere in Canopy, one password per user.
        await #expect(throws: CanopyError.self) { try await passwords.create(user: "carol", tenant: "lab", role: .user, password: "short") }
        await #expect(throws: CanopyError.self) { try await passwords.create(user: "Carol!", tenant: "lab", role: .user, password: "long enough") }
        await #expect(throws: CanopyError.self) { try await passwords.create(user: "alice", tenant: "lab", role: .user, password: "another one") }
        // A new password replaces the old, and moves passwordChangedAt (what revokes dialect tokens issued before).
        clock.advance(by: 10)
        let changed = try await passwords.setPassword(user: "alice", tenant: "lab", password: "battery staple")
        #expect(changed.passwordChangedAt > alice.passwordChangedAt && passwords.current(user: "alice", tenant: "lab") == changed)
        await #expect(throws: PasswordService.Refusal.invalid) {
            try await passwords.verify(user: "alice", tenant: "lab", password: "correct horse", client: "a")
        }
        #expect(try await passwords.remove(user: "alice", tenant: "lab"))
        #expect(passwords.current(user: "alice", tenant: "lab") == nil)
        // A second service over the same store loads what the first wrote.
        let again = PasswordService(store: store, clock: clock.clock)
        try await again.load()
        #expect(again.current(user: "bob", tenant: "lab") == bob)
    }

    @Test("ten failures from an address, or for a user, refuse further tries for five minutes, the right password too")
    func throttling() async throws {
        let clock = ManualClock()
        let (passwords, _) = try service(clock)
        _ = try await passwords.create(user: "alice", tenant: "lab", role: .user, password: "correct horse")
        for _ in 0..<PasswordService.maxFailures {
            await #expect(throws: PasswordService.Refusal.invalid) {
                try await passwords.verify(user: "nobody", tenant: "lab", password: "x", client: "10.0.0.9")
            }
        }
        // The address is throttled, whoever it tries; another address is not.
        await #expect(throws: PasswordService.Refusal.throttled(retryAfter: 300)) {
            try await passwords.verify(user: "alice", tenant: "lab", password: "correct horse", client: "10.0.0.9")
        }
        #expect(try await passwords.verify(user: "alice", tenant: "lab", password: "correct horse", client: "10.0.0.10").user == "alice")
        // A user guessed at from many addresses is throttled too.
        for i in 0..<PasswordService.maxFailures {
            await #expect(throws: PasswordService.Refusal.invalid) {
                try await passwords.verify(user: "alice", tenant: "lab", password: "guess", client: "10.1.0.\(i)")
            }
        }
        await #expect(throws: PasswordService.Refusal.self) {
            try await passwords.verify(user: "alice", tenant: "lab", password: "correct horse", client: "10.2.0.1")
        }
        clock.advance(by: PasswordService.window + 1)
        #expect(try await passwords.verify(user: "alice", tenant: "lab", password: "correct horse", client: "10.0.0.9").user == "alice")
    }

    @Test("organisation ids: 32 hex digits, stable, one per tenant")
    func tenantIDs() {
        #expect(TenantID.of("lab") == TenantID.of("lab") && TenantID.of("lab") != TenantID.of("lab2"))
        #expect(TenantID.of("lab").count == 32 && TenantID.of("lab").allSatisfy(\.isHexDigit))
    }
}
