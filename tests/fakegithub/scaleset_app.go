package fakegithub

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"time"
)

// appInstallationToken mints an installation access token for a GitHub
// App, as POST /app/installations/{id}/access_tokens does: the request is
// authenticated by the App's JWT (RS256, iss the App's id or client id,
// exp in the future; the fake does not check the signature, having no App
// keys), and the token it returns (201) may use every scope, for an hour.
func (s *Server) appInstallationToken(w http.ResponseWriter, r *http.Request, _ *call) {
	if !validAppJWT(bearer(r)) {
		s.writeErrorLocked(w, http.StatusUnauthorized, "A JSON web token could not be decoded")
		return
	}
	token := "ghs_" + newSecret()
	expires := time.Now().Add(time.Hour).UTC()
	s.AddToken(Token{Value: token})
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(http.StatusCreated)
	json.NewEncoder(w).Encode(map[string]any{
		"token":                token,
		"expires_at":           expires.Format(time.RFC3339),
		"permissions":          map[string]string{"administration": "write", "organization_self_hosted_runners": "write", "metadata": "read"},
		"repository_selection": "all",
	})
}

// validAppJWT checks the shape GitHub checks before the signature: three
// parts, alg RS256, an issuer, and an exp still ahead (at most 10 minutes).
func validAppJWT(token string) bool {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return false
	}
	var header struct {
		Alg string `json:"alg"`
	}
	var claims struct {
		Iss any   `json:"iss"`
		Exp int64 `json:"exp"`
	}
	if decodeJWTPart(parts[0], &header) != nil || decodeJWTPart(parts[1], &claims) != nil {
		return false
	}
	exp := time.Unix(claims.Exp, 0)
	return header.Alg == "RS256" && claims.Iss != nil && claims.Iss != "" &&
		time.Now().Before(exp) && time.Until(exp) <= 11*time.Minute
}

func decodeJWTPart(part string, v any) error {
	data, err := base64.RawURLEncoding.DecodeString(part)
	if err != nil {
		return err
	}
	return json.Unmarshal(data, v)
}
