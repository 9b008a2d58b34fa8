-- edu_v2, version 24: the security review's second pass (issue 23).
--
--  * No request session writes a password hash, by any statement: edu_app inserts users
--    without one (a new account has no usable password until the owner sets one), as it
--    already updated them without one. Deleting an account revokes its tokens.
--  * The login path stores a new hash only as the upgrade of a legacy one (MD5, bcrypt) to
--    argon2id: it can no longer replace an argon2 hash, whatever hash it passes as verified.
--  * A token is revoked at logout (auth.revoked_tokens, checked with token_still_valid).
--  * Only the roles that need it may connect to this database (security/grants.sql, applied
--    after every schema apply and every restore, revokes CONNECT from PUBLIC).

-- An account inserted by an application has no password that verifies: '!' is no argon2 hash.
ALTER TABLE users ALTER COLUMN password_hash SET DEFAULT '!';
ALTER TABLE users ALTER COLUMN password_algo SET DEFAULT 'argon2';
REVOKE INSERT ON users FROM edu_app;
GRANT INSERT (id, username, email, role, is_active, last_login_at, created_at, updated_at)
    ON users TO edu_app;

-- A deleted account's tokens die with it, even if an account of the same id comes back.
CREATE FUNCTION auth.note_account_deleted() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp
AS $$
BEGIN
    INSERT INTO auth.credential_changes (user_id, changed_at)
    VALUES (OLD.id, clock_timestamp())
    ON CONFLICT (user_id) DO UPDATE SET changed_at = excluded.changed_at;
    RETURN NULL;
END
$$;

CREATE TRIGGER revoke_tokens_of_deleted AFTER DELETE ON users
    FOR EACH ROW EXECUTE FUNCTION auth.note_account_deleted();

-- A successful login: the time; and, when the stored hash is a legacy one, its argon2id
-- replacement. The database cannot compute argon2, so it cannot check that the new hash is of
-- the password just verified; it makes sure that the login path can only ever upgrade a legacy
-- hash (which it can read anyway), never replace an argon2 one.
CREATE OR REPLACE FUNCTION auth.record_login(account uuid, verified_hash text, new_hash text,
                                             new_algo text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp
AS $$
DECLARE
    upgrade boolean := new_hash IS NOT NULL AND new_algo = 'argon2'
        AND new_hash ~ '^\$argon2id\$v=19\$m=[0-9]+,t=[0-9]+,p=[0-9]+\$[A-Za-z0-9+/]+\$[A-Za-z0-9+/]+$';
BEGIN
    PERFORM set_config('auth.rehash', 'on', true);
    UPDATE users
    SET last_login_at = now(),
        password_hash = CASE WHEN upgrade AND password_algo <> 'argon2' THEN new_hash
                             ELSE password_hash END,
        password_algo = CASE WHEN upgrade AND password_algo <> 'argon2' THEN 'argon2'
                             ELSE password_algo END,
        updated_at = CASE WHEN upgrade AND password_algo <> 'argon2' THEN now()
                          ELSE updated_at END
    WHERE id = account AND password_hash = verified_hash;
    PERFORM set_config('auth.rehash', '', true);
END
$$;

-- Logout: a token named by its id (the JWT's jti) is void until it would have expired anyway.
CREATE TABLE auth.revoked_tokens (
    token_id   uuid PRIMARY KEY,
    user_id    uuid,
    expires_at timestamptz NOT NULL
);
CREATE INDEX revoked_tokens_expiry_idx ON auth.revoked_tokens (expires_at);

-- The caller revokes a token of the user its session acts for; expired entries are dropped on
-- the way (an expired token is refused by its signature check already).
CREATE FUNCTION revoke_token(token uuid, expires timestamptz) RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = public, pg_temp
BEGIN ATOMIC
    DELETE FROM auth.revoked_tokens WHERE expires_at < now();
    INSERT INTO auth.revoked_tokens (token_id, user_id, expires_at)
    VALUES (token, current_user_id(), expires)
    ON CONFLICT (token_id) DO NOTHING;
END;

CREATE FUNCTION token_still_valid(issued_at timestamptz, token uuid) RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
RETURN token_still_valid(issued_at)
       AND NOT EXISTS (SELECT FROM auth.revoked_tokens r WHERE r.token_id = token);
