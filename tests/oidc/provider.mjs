// A real OpenID provider for the web console tests: the certified `oidc-provider`
// package with one static client and test people. Any password signs in; who you
// are decides your groups:
//   alice, bob -> groups ["sre"] (approvers in the tests' policy), carol ->
//   ["analysts"] (a requester group), anyone else -> [].
// Usage: node provider.mjs PORT CLIENT_ID CLIENT_SECRET REDIRECT_URI
// Prints "ready ISSUER" on stdout once it listens on 127.0.0.1:PORT.
// For the console's refusal tests, `GET /portcullis-test/tamper?mode=aud|exp|off`
// makes the token endpoint hand out ID tokens, validly signed, for another audience
// or already expired (until switched off).
import { generateKeyPairSync, randomUUID, sign } from "node:crypto";
import Provider from "oidc-provider";

// A fresh signing key on every start (a restart is a key rotation the console must
// follow), never the package's fixed development keys.
const { privateKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: "jwk" }), kid: randomUUID(), use: "sig", alg: "RS256" };

const [port, clientId, clientSecret, redirectUri] = process.argv.slice(2);
const issuer = `http://127.0.0.1:${port}`;
const groups = { alice: ["sre"], bob: ["sre"], carol: ["analysts"] };

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: clientId,
      client_secret: clientSecret,
      redirect_uris: [redirectUri],
      grant_types: ["authorization_code", "urn:ietf:params:oauth:grant-type:device_code"],
      response_types: ["code"],
      token_endpoint_auth_method: "client_secret_basic",
    },
  ],
  async findAccount(ctx, id) {
    return {
      accountId: id,
      async claims() {
        return {
          sub: id,
          email: `${id}@example.com`,
          email_verified: true,
          name: id,
          groups: groups[id] ?? [],
        };
      },
    };
  },
  claims: {
    openid: ["sub"],
    email: ["email", "email_verified"],
    profile: ["name"],
    groups: ["groups"],
  },
  // Put the scopes' claims in the ID token, as identity providers commonly do
  // for groups, so the console needs no userinfo call.
  conformIdTokenClaims: false,
  pkce: { required: () => true },
  cookies: { keys: ["portcullis-test-only-cookie-key"] },
  jwks: { keys: [signingKey] },
  features: { devInteractions: { enabled: true }, deviceFlow: { enabled: true } },
});
// ID tokens as a misconfigured or replaying party would present them: the claims
// changed, then signed again with the provider's own key (the signature verifies).
let tamper = "off";
const changes = {
  aud: (claims) => { claims.aud = "another-application"; },
  exp: (claims) => {
    const now = Math.floor(Date.now() / 1000);
    claims.iat = now - 7200;
    claims.exp = now - 3600;
  },
};
function resign(jwt, change) {
  const [header, payload] = jwt.split(".");
  const claims = JSON.parse(Buffer.from(payload, "base64url").toString());
  change(claims);
  const body = `${header}.${Buffer.from(JSON.stringify(claims)).toString("base64url")}`;
  return `${body}.${sign("sha256", Buffer.from(body), privateKey).toString("base64url")}`;
}
provider.use(async (ctx, next) => {
  if (ctx.path === "/portcullis-test/tamper") {
    tamper = changes[ctx.query.mode] ? ctx.query.mode : "off";
    ctx.body = `tamper ${tamper}\n`;
    return;
  }
  await next();
  if (tamper !== "off" && ctx.oidc?.route === "token" && ctx.body?.id_token) {
    ctx.body = { ...ctx.body, id_token: resign(ctx.body.id_token, changes[tamper]) };
  }
});
provider.proxy = false;
provider.listen(Number(port), "127.0.0.1", () => {
  console.log(`ready ${issuer}`);
});
