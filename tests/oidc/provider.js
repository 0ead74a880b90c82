// A real OpenID provider (oidc-provider, the certified Node implementation) for
// vethub's single sign-on tests. Never for production: keys, cookies and the
// login form are the library's development ones (any password is accepted).
//
// Environment:
//   PORT          port on 127.0.0.1 (the issuer is http://127.0.0.1:PORT)
//   REDIRECT_URI  the hub's callback, registered for the one client
//   CLIENT_ID, CLIENT_SECRET   that client (defaults: vethub / vethub-test-secret)
//   OIDC_ROLES    JSON {login: roles claim (a string or a list)}; a login not
//                 listed signs in with no roles claim at all
//   OIDC_CLAIMS_IN_USERINFO=1  scope claims (roles, names) only from userinfo,
//                 not in the ID token (the library's default, "conform" mode)
import Provider from 'oidc-provider';

const port = Number(process.env.PORT || 0);
const issuer = `http://127.0.0.1:${port}`;
const roles = JSON.parse(process.env.OIDC_ROLES || '{"vera": ["vets"]}');

const configuration = {
  clients: [
    {
      client_id: process.env.CLIENT_ID || 'vethub',
      client_secret: process.env.CLIENT_SECRET || 'vethub-test-secret',
      redirect_uris: [process.env.REDIRECT_URI],
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    },
  ],
  pkce: { required: () => true }, // S256 is the only method the library allows
  claims: {
    openid: ['sub'],
    // The roles claim rides on the profile scope, which the hub asks for.
    profile: ['preferred_username', 'name', 'roles'],
    email: ['email', 'email_verified'],
  },
  // Scope claims go into the ID token too, as Entra ID and Keycloak put roles there.
  conformIdTokenClaims: process.env.OIDC_CLAIMS_IN_USERINFO === '1',
  features: { devInteractions: { enabled: true } },
  async findAccount(ctx, id) {
    return {
      accountId: id,
      async claims() {
        const claims = {
          sub: id,
          preferred_username: id,
          name: id,
          email: `${id}@clinic.test`,
          email_verified: true,
        };
        if (Object.hasOwn(roles, id)) claims.roles = roles[id];
        return claims;
      },
    };
  },
};

const provider = new Provider(issuer, configuration);
provider.listen(port, '127.0.0.1', () => {
  console.log(`oidc-provider listening on ${issuer}`);
});
