"""The sandbox's key material and fake accounts, kept in its state directory.

Everything a client needs to talk to the sandbox as if it were the real
providers: a local CA (trust ``ca.pem``) and the server certificate it
signed, an APNs token key (.p8), an FCM service account file, Twilio,
Vonage, SendGrid and Mandrill credentials, and the key pair that signs
SendGrid event webhooks. Created on first start and reused afterwards, so a
``.env`` written for one run stays valid for the next.

These are throwaway local credentials; they are still written with mode 0600.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import string
from dataclasses import asdict, dataclass
from pathlib import Path

import trustme
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

CREDENTIALS_FILE = "credentials.json"
CA_FILE = "ca.pem"
SERVER_CERT_FILE = "server.pem"  # the server's private key and certificate chain
APNS_KEY_FILE = "apns-auth-key.p8"
FCM_SERVICE_ACCOUNT_FILE = "fcm-service-account.json"
FCM_SIGNING_KEY_FILE = "fcm-signing-key.pem"
SENDGRID_WEBHOOK_KEY_FILE = "sendgrid-webhook-key.pem"


def make_apns_key() -> str:
    """A new P-256 private key as PKCS#8 PEM text: the shape of an Apple .p8 token key."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def public_pem(private_pem: str) -> str:
    """The public half of a PEM private key, as PEM text."""
    key = serialization.load_pem_private_key(private_pem.encode(), password=None)
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def sendgrid_public_key(private_pem: str) -> str:
    """The verification key as SendGrid shows it: base64 DER, no PEM armour."""
    key = serialization.load_pem_private_key(private_pem.encode(), password=None)
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()


def _token(alphabet: str, length: int) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(length))


def _write_private(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")
    os.chmod(path, 0o600)


@dataclass
class SandboxCredentials:
    """Fake accounts the sandbox accepts; see the module docstring."""

    state_dir: str
    apns_team_id: str
    apns_key_id: str
    apns_topic: str
    fcm_project_id: str
    fcm_client_email: str
    fcm_private_key_id: str
    twilio_account_sid: str
    twilio_auth_token: str
    twilio_from_number: str
    vonage_api_key: str
    vonage_api_secret: str
    vonage_from: str
    sendgrid_api_key: str
    sendgrid_from_email: str
    mailchimp_api_key: str
    mailchimp_from_email: str

    @property
    def dir(self) -> Path:
        return Path(self.state_dir)

    @property
    def ca_file(self) -> Path:
        return self.dir / CA_FILE

    @property
    def server_cert_file(self) -> Path:
        return self.dir / SERVER_CERT_FILE

    @property
    def apns_key_file(self) -> Path:
        return self.dir / APNS_KEY_FILE

    @property
    def apns_private_key(self) -> str:
        return self.apns_key_file.read_text(encoding="utf-8")

    @property
    def fcm_service_account_file(self) -> Path:
        return self.dir / FCM_SERVICE_ACCOUNT_FILE

    @property
    def fcm_private_key(self) -> str:
        return (self.dir / FCM_SIGNING_KEY_FILE).read_text(encoding="utf-8")

    @property
    def sendgrid_webhook_private_key(self) -> str:
        return (self.dir / SENDGRID_WEBHOOK_KEY_FILE).read_text(encoding="utf-8")

    @property
    def sendgrid_webhook_public_key(self) -> str:
        """For OUTBOX_SENDGRID_WEBHOOK_PUBLIC_KEY / sendgrid's EventWebhook."""
        return sendgrid_public_key(self.sendgrid_webhook_private_key)

    def secret_values(self) -> list[str]:
        """Every secret the sandbox hands out (for tests that look for leaks)."""
        return [
            self.apns_private_key,
            self.fcm_private_key,
            self.twilio_auth_token,
            self.vonage_api_secret,
            self.sendgrid_api_key,
            self.mailchimp_api_key,
        ]

    def write_fcm_service_account(self, token_uri: str) -> Path:
        """The service account file, its token URI pointing at this sandbox run."""
        info = {
            "type": "service_account",
            "project_id": self.fcm_project_id,
            "private_key_id": self.fcm_private_key_id,
            "private_key": self.fcm_private_key,
            "client_email": self.fcm_client_email,
            "client_id": "100000000000000000001",
            "auth_uri": token_uri,
            "token_uri": token_uri,
        }
        _write_private(self.fcm_service_account_file, json.dumps(info, indent=2))
        return self.fcm_service_account_file

    @classmethod
    def load_or_create(cls, state_dir: Path) -> SandboxCredentials:
        """The credentials in ``state_dir``, created there on first use."""
        state_dir = Path(state_dir).resolve()
        state_dir.mkdir(parents=True, exist_ok=True)
        path = state_dir / CREDENTIALS_FILE
        files = (
            CA_FILE,
            SERVER_CERT_FILE,
            APNS_KEY_FILE,
            FCM_SIGNING_KEY_FILE,
            SENDGRID_WEBHOOK_KEY_FILE,
        )
        if path.exists() and all((state_dir / f).exists() for f in files):
            values = json.loads(path.read_text(encoding="utf-8"))
            values["state_dir"] = str(state_dir)
            return cls(**values)
        return cls._create(state_dir)

    @classmethod
    def _create(cls, state_dir: Path) -> SandboxCredentials:
        ca = trustme.CA(organization_name="Outbox provider sandbox")
        # The certificate names the loopback addresses the sandbox binds to.
        leaf = ca.issue_cert("127.0.0.1", "localhost", "::1")
        ca.cert_pem.write_to_path(str(state_dir / CA_FILE))
        _write_private(
            state_dir / SERVER_CERT_FILE, leaf.private_key_and_cert_chain_pem.bytes().decode()
        )
        _write_private(state_dir / APNS_KEY_FILE, make_apns_key())
        rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        _write_private(
            state_dir / FCM_SIGNING_KEY_FILE,
            rsa_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ).decode(),
        )
        # SendGrid signs its event webhook with ECDSA over P-256 too.
        _write_private(state_dir / SENDGRID_WEBHOOK_KEY_FILE, make_apns_key())
        upper = string.ascii_uppercase + string.digits
        lower = string.ascii_letters + string.digits
        creds = cls(
            state_dir=str(state_dir),
            apns_team_id=_token(upper, 10),
            apns_key_id=_token(upper, 10),
            apns_topic="com.example.outbox",
            fcm_project_id="outbox-sandbox",
            fcm_client_email="outbox@outbox-sandbox.iam.gserviceaccount.com",
            fcm_private_key_id=secrets.token_hex(20),
            twilio_account_sid="AC" + secrets.token_hex(16),
            twilio_auth_token=secrets.token_hex(16),
            twilio_from_number="+15005550006",
            vonage_api_key=secrets.token_hex(4),
            vonage_api_secret=_token(lower, 16),
            vonage_from="Outbox",
            sendgrid_api_key=f"SG.{_token(lower, 22)}.{_token(lower, 43)}",
            sendgrid_from_email="outbox@example.com",
            mailchimp_api_key="md-" + _token(lower, 22),
            mailchimp_from_email="outbox@example.com",
        )
        values = asdict(creds)
        del values["state_dir"]
        _write_private(state_dir / CREDENTIALS_FILE, json.dumps(values, indent=2))
        return creds
